"""The RACL search step of a study: data set in, genotype file and search metrics out.

:mod:`lsakit.experiments.studies` trains "the cell found by an architecture search" with the one
trainer; this module runs that search (:func:`~lsakit.nas.search.search`) on a registered data
set and leaves, beside ``genotype_path``:

* ``genotype_path`` — the genotype as JSON (what the ``genotype_net`` model's ``genotype=``
  argument reads, :func:`~lsakit.nas.genotype.load_genotype`);
* ``search.json`` — the whole :class:`~lsakit.nas.search.SearchResult` (settings, history,
  final μ, σ of every confidence);
* ``cell.png`` — the derived cell (:func:`~lsakit.nas.genotype.plot_cell`).

Data *(chosen, as DARTS)*: the first ``limit`` training images (all when absent) are split in
halves, the first for the weights, the second for the architecture; the test split is never used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from lsakit import data as datasets
from lsakit._io import atomic_write_text
from lsakit.errors import ConfigError
from lsakit.nas.genotype import plot_cell
from lsakit.nas.search import ProgressFn, SearchConfig, SearchResult, search

#: Settings a study may give besides the :class:`SearchConfig` fields.
EXTRA_SETTINGS = ("limit",)


def search_config(settings: Mapping[str, Any], seed: int) -> SearchConfig:
    """A :class:`SearchConfig` from study settings (the study's seed wins over any ``seed``)."""
    known = {f.name for f in fields(SearchConfig)}
    unknown = sorted(k for k in settings if k not in known and k not in EXTRA_SETTINGS)
    if unknown:
        raise ConfigError(
            f"unknown search settings {unknown}; accepted: {', '.join(sorted(known))}, "
            f"{', '.join(EXTRA_SETTINGS)}"
        )
    values = {k: v for k, v in settings.items() if k in known}
    values["seed"] = seed
    for key in ("ops", "reductions", "arch_betas"):
        if key in values and isinstance(values[key], list):
            values[key] = tuple(values[key])
    return SearchConfig(**values)


def search_for_study(
    dataset: str,
    settings: Mapping[str, Any],
    seed: int,
    genotype_path: str | Path,
    *,
    data_dir: str | Path | None = None,
    device: torch.device | str | None = None,
    progress: ProgressFn | None = None,
    show_progress: bool = False,
) -> dict[str, float]:
    """Search on ``dataset``, write the genotype (and search.json, cell.png), return metrics.

    Args:
        dataset: a registered data set of images (``lsakit.data``), e.g. ``"mnist"``.
        settings: :class:`SearchConfig` fields plus ``limit`` (training images used).
        seed: the search seed.
        genotype_path: where the genotype JSON goes; its folder receives the other files.
        data_dir: the data directory (default: lsakit's).
        device: where the supernet runs (default: the CPU, where the data is).
        progress: per-step/epoch callback, as :func:`~lsakit.nas.search.search`.
        show_progress: a bar (or plain lines) over each epoch's steps, as there.

    Returns:
        ``{"mu_F": μ_F, "sigma_F": σ_F, "mu_F target (ln λ̄_F)": ln λ̄_F}`` at the search's end
        (keys starting with ``mu_F``/``sigma_F``: the study report prints them as numbers).
    """
    config = search_config(settings, seed)
    limit = settings.get("limit")
    x, y = datasets.load_tensors(dataset, "train", limit=limit, data_dir=data_dir)
    half = x.shape[0] // 2
    if half < 1:
        raise ConfigError(f"the search needs at least 2 training images, got {x.shape[0]}")
    result = search(
        config, x[:half], y[:half], x[half:], y[half:], device=device, progress=progress,
        show_progress=show_progress,
    )  # fmt: skip
    write_search_outputs(result, genotype_path)
    return {
        "mu_F": result.mu_f,
        "sigma_F": result.sigma_f,
        "mu_F target (ln λ̄_F)": result.log_lam_bar,
    }


def write_search_outputs(result: SearchResult, genotype_path: str | Path) -> Path:
    """Write ``genotype_path`` (JSON), ``search.json`` and ``cell.png`` beside it; returns the first."""
    path = Path(genotype_path)
    atomic_write_text(path, json.dumps(result.genotype.to_dict(), indent=2))
    atomic_write_text(path.with_name("search.json"), json.dumps(result.to_dict(), indent=2))
    plot_cell(result.genotype, path.with_name("cell.png"))
    return path


__all__ = ["EXTRA_SETTINGS", "search_config", "search_for_study", "write_search_outputs"]
