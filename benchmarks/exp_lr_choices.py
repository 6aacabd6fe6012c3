"""Experiment behind the regularizer's defaults: ``grad_through`` and γ (issue 3, §2).

Setting (paper Table 2's best proposal): Moon, model A, AT-FGSM + LR on L2 (the last hidden
layer), several seeds. For each variant it reports, as mean ± std over the seeds:

* FGSM accuracy at a large ε (default: the paper's ε = 0.5 in raw Moon coordinates) and the R&G
  score over the paper's sweep ε_raw ∈ {0, .1, .2, .3, .4, .5} (converted to unit coordinates);
* the relative error of the regularized layer L2 under PGD-20 at the training ε (batch form, on
  the test set): what LR is meant to drive down.

Variants: base AT-FGSM (no LR); LR with grad_through ∈ {both, adversarial, clean} × γ ∈ {0.03, 0.1,
0.3, 1}. Run: ``python benchmarks/exp_lr_choices.py [--seeds 3] [--gammas ...]`` (about a minute on
2 CPU cores); ``--json`` prints the raw numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from lsakit import data as datasets
from lsakit import models
from lsakit._torch import seed_everything
from lsakit.analysis import relative_errors
from lsakit.data.moons import moons_scale
from lsakit.perturb import FGSM, PGD
from lsakit.probe import LayerProbe
from lsakit.train.objectives import build_objective
from lsakit.train.regularizers import LayerwiseRegularizer

RAW_SWEEP = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def train_one(
    seed: int, eps: float, epochs: int, reg: LayerwiseRegularizer | None
) -> torch.nn.Module:
    """AT-FGSM (+ LR) on Moon with Adam lr 1e-2, batch 32 (the Moon preset's optimizer)."""
    seed_everything(seed)
    model = models.build("model_a")
    loader = datasets.load("moons", "train", batch_size=32, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    objective = build_objective("fgsm", eps=eps)
    layers = reg.layers if reg is not None else ["L2"]
    model.train()
    with LayerProbe(model, layers, detach=False) as probe:
        for _ in range(epochs):
            for x, y in loader:
                out = objective(model, x, y, probe)
                loss = out.loss
                if reg is not None:
                    # AT-FGSM has no clean forward of its own: one extra clean forward for φ(x).
                    model(x)
                    loss = loss + reg(probe.take(), out.adv_reps)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return model.eval()


def evaluate(model: torch.nn.Module, eps: float, scale: float) -> dict[str, float]:
    x, y = datasets.load_tensors("moons", "test")
    fgsm = FGSM(model, eps=0.0)
    direction = fgsm.direction(x, y)
    accs = []
    with torch.no_grad():
        for raw in RAW_SWEEP:
            x_adv = FGSM.step(x, direction, raw / scale)
            accs.append(float((model(x_adv).argmax(1) == y).float().mean()) * 100)
    x_pgd = PGD(model, eps=eps, steps=20, seed=0)(x, y)
    re = relative_errors(model, x, x_pgd, reduction="batch")
    return {"fgsm_large": accs[-1], "rg": sum(accs), "clean": accs[0], "re_L2": re[2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument(
        "--eps-raw", type=float, default=0.3, help="training ε in raw Moon coordinates"
    )
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.03, 0.1, 0.3, 1.0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    scale = moons_scale()
    eps = args.eps_raw / scale
    variants: dict[str, LayerwiseRegularizer | None] = {"AT-FGSM (base)": None}
    for through in ("both", "adversarial", "clean"):
        for gamma in args.gammas:
            variants[f"LR-L2 {through}, γ={gamma:g}"] = LayerwiseRegularizer(
                ["L2"], gamma, grad_through=through
            )
    results: dict[str, list[dict[str, float]]] = {}
    started = time.perf_counter()
    for name, reg in variants.items():
        results[name] = [
            evaluate(train_one(seed, eps, args.epochs, reg), eps, scale)
            for seed in range(args.seeds)
        ]
    if args.json:
        print(json.dumps(results, indent=2))
    print(
        f"Moon, model A, AT-FGSM ε_raw={args.eps_raw} (unit {eps:.4f}), {args.epochs} epochs, "
        f"{args.seeds} seeds, {time.perf_counter() - started:.0f} s"
    )
    print(
        f"{'variant':28s} {'clean':>13s} {'FGSM ε_raw=.5':>15s} {'R&G':>15s} {'RE L2 (PGD)':>15s}"
    )

    def cell(rows: list[dict[str, float]], key: str, fmt: str) -> str:
        values = [r[key] for r in rows]
        sd = statistics.pstdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):{fmt}} ± {sd:{fmt}}"

    for name, rows in results.items():
        summary: dict[str, Any] = {
            "clean": cell(rows, "clean", ".1f"),
            "fgsm": cell(rows, "fgsm_large", ".1f"),
            "rg": cell(rows, "rg", ".1f"),
            "re": cell(rows, "re_L2", ".3f"),
        }
        print(
            f"{name:28s} {summary['clean']:>13s} {summary['fgsm']:>15s} {summary['rg']:>15s} "
            f"{summary['re']:>15s}"
        )


if __name__ == "__main__":
    main()
