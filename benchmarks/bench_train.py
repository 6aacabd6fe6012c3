"""Benchmark of adversarial training steps, as ratios measured in the same run.

(a) time per AT-LR PGD-10 step / time per AT-PGD-10 step (the regularizer's overhead: one extra
    clean forward, the relative errors, and the epoch's one dry forward that resolves the layer
    label to its exact name, as the trainer runs them). Target ≤ 1.05.
(b) lsakit AT-PGD-10 samples/s ÷ a minimal hand-written PGD-AT loop on the same model and data.
    Target ≥ 0.95.

Both use ``lsakit.train.trainer.training_step``, the code the trainer runs. Interleaved repeats,
best of N (robust to a shared, noisy machine). Model B on MNIST-shaped random data by default.
Run: ``python benchmarks/bench_train.py [--model model_b] [--batches 10] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lsakit import models
from lsakit.probe import LayerProbe
from lsakit.train.objectives import build_objective
from lsakit.train.regularizers import LayerwiseRegularizer
from lsakit.train.step import prepare_regularizers
from lsakit.train.trainer import training_step

EPS, ALPHA, STEPS = 0.3, 0.075, 10

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def make_batches(shape: tuple[int, ...], n: int, batch_size: int, classes: int) -> Batches:
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.rand(batch_size, *shape, generator=g),
            torch.randint(0, classes, (batch_size,), generator=g),
        )
        for _ in range(n)
    ]


def lsakit_epoch(model: nn.Module, batches: Batches, regularized: bool) -> float:
    objective = build_objective("pgd", eps=EPS, alpha=ALPHA, steps=STEPS)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    regularizer = LayerwiseRegularizer(["L0"], gamma=1.0) if regularized else None
    model.train()
    start = time.perf_counter()
    if regularizer is None:
        for x, y in batches:
            training_step(model, objective, None, None, optimizer, x, y)
    else:  # as the trainer's epoch: the label resolved to its name, then one probe on it
        prepared, layers = prepare_regularizers(model, [regularizer], batches[0][0])
        with LayerProbe(model, layers, detach=False) as probe:
            for x, y in batches:
                training_step(model, objective, prepared, probe, optimizer, x, y)
    return time.perf_counter() - start


def hand_written_epoch(model: nn.Module, batches: Batches) -> float:
    """The minimal PGD-AT loop a researcher would write (Madry et al. 2018)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    start = time.perf_counter()
    for x, y in batches:
        model.eval()
        x_adv = (x + torch.empty_like(x).uniform_(-EPS, EPS)).clamp(0, 1)
        for _ in range(STEPS):
            x_adv.requires_grad_(True)
            loss = F.cross_entropy(model(x_adv), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = x_adv.detach() + ALPHA * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - EPS), x + EPS).clamp(0, 1)
        model.train()
        loss = F.cross_entropy(model(x_adv), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def timings(repeats: int, runs: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Each run ``repeats`` times, rotating the order every round (no variant always goes first)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(runs[name]())
    return times


def measure(model_name: str, batch_count: int, batch_size: int, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` seconds of each variant, the two ratios, and their medians of rounds."""
    info = models.info(model_name)
    batches = make_batches(info.input_shape, batch_count, batch_size, info.num_classes)
    torch.manual_seed(0)
    model = models.build(model_name)
    lsakit_epoch(model, batches[:1], False)  # warm-up
    hand_written_epoch(model, batches[:1])
    times = timings(
        repeats,
        {
            "at_pgd": lambda: lsakit_epoch(model, batches, regularized=False),
            "at_lr_pgd": lambda: lsakit_epoch(model, batches, regularized=True),
            "hand": lambda: hand_written_epoch(model, batches),
        },
    )
    best = {name: min(values) for name, values in times.items()}
    rounds_lr = [a / b for a, b in zip(times["at_lr_pgd"], times["at_pgd"], strict=True)]
    rounds_hand = [a / b for a, b in zip(times["hand"], times["at_pgd"], strict=True)]
    return {
        **best,
        "samples": float(batch_count * batch_size),
        "ratio_lr": best["at_lr_pgd"] / best["at_pgd"],
        "ratio_lr_median": statistics.median(rounds_lr),
        "ratio_hand": best["hand"] / best["at_pgd"],
        "ratio_hand_median": statistics.median(rounds_hand),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", default="model_b")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    r = measure(args.model, args.batches, args.batch_size, args.repeats)
    n = r["samples"]
    print(f"machine: {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"{args.model}, {args.batches} batches of {args.batch_size}, PGD-{STEPS} ε={EPS}")
    print(f"  AT-PGD (lsakit):      {r['at_pgd']:.3f} s  ({n / r['at_pgd']:.0f} samples/s)")
    print(f"  AT-LR-L0 PGD:         {r['at_lr_pgd']:.3f} s")
    print(f"  hand-written PGD-AT:  {r['hand']:.3f} s  ({n / r['hand']:.0f} samples/s)")
    print(
        f"(a) AT-LR step / AT-PGD step = {r['ratio_lr']:.3f} best-of-{args.repeats}, "
        f"{r['ratio_lr_median']:.3f} median of rounds   (target ≤ 1.05)"
    )
    print(
        f"(b) lsakit samples/s ÷ hand-written = {r['ratio_hand']:.3f} best-of-{args.repeats}, "
        f"{r['ratio_hand_median']:.3f} median of rounds   (target ≥ 0.95)"
    )


if __name__ == "__main__":
    main()
