"""``lsakit search``: RACL, architecture search under a Lipschitz constraint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lsakit.cli._app import app, out
from lsakit.cli._derive import options_command
from lsakit.config.commands import SearchOptions

DOC = """RACL: differentiable architecture search with a Lipschitz constraint (Dong et al. 2020).

Prints μ_F, σ_F, the constraint g and the dual variable u every epoch; writes genotype.json
(train it with `lsakit train -m genotype_net --model-arg genotype=OUT/genotype.json`),
search.json and cell.png. --no-lipschitz is the same search without the constraint.
"""


def run(options: SearchOptions) -> None:
    from lsakit.nas.study import search_for_study
    from lsakit.train import resolve_device

    settings: dict[str, Any] = {
        k: v
        for k, v in {
            "cells": options.cells, "nodes": options.nodes, "channels": options.channels,
            "epochs": options.epochs, "limit": options.limit,
            "lam_bar_factor": options.lam_bar_factor, "reductions": options.reductions or None,
        }.items()
        if v is not None
    }  # fmt: skip
    dataset, lipschitz = options.dataset, options.lipschitz
    settings["lipschitz"] = lipschitz
    root = options.out or Path("runs") / f"search-{dataset}-{'racl' if lipschitz else 'plain'}"

    def show(record: Any) -> None:
        if record.kind == "epoch":
            out.print(record.describe())

    out.print(f"searching on {dataset} ({'with' if lipschitz else 'without'} the constraint)")
    metrics = search_for_study(
        dataset, settings, options.seed, root / "genotype.json", data_dir=options.data_dir,
        device=resolve_device(options.device), progress=show, show_progress=True,
    )  # fmt: skip
    out.print(
        f"μ_F {metrics['mu_F']:.3f}, σ_F {metrics['sigma_F']:.3f} (ln λ̄_F "
        f"{metrics['mu_F target (ln λ̄_F)']:.3f}); wrote {root / 'genotype.json'}, "
        f"{root / 'search.json'}, {root / 'cell.png'}"
    )
    out.print(
        f"train the cell: lsakit train -d {dataset} -m genotype_net --model-arg "
        f"genotype={root / 'genotype.json'} --method pgd --eps …"
    )


options_command(app, "search", SearchOptions, run, DOC)
