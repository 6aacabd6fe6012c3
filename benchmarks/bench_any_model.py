"""Benchmark: ``lsakit.analyze`` on a third-party ResNet-18 against the same work done by hand.

The same forwards and attacks without lsakit: per batch, one clean forward, then for each
perturbation (Gaussian noise, FGSM) the perturbed input and one perturbed forward; the hand version
computes FGSM's gradient with plain autograd and keeps the 17 activation outputs with its own
hooks (what LSA compares), no statistics. The lsakit version adds validation, the probe (its
function mode, which captures activation functions inside the clean and perturbed forwards: no
extra forward), the relative errors and the streaming statistics.
Target: analyze ÷ hand ≤ 1.05. Ratios are measured in the same run (best of ``--repeats``,
interleaved); absolute times are context only.

Run (needs torchvision and timm): ``python benchmarks/bench_any_model.py
[--sources torchvision,timm] [--batches 8] [--batch-size 64] [--repeats 7]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from lsakit import analyze
from lsakit.activations import InvisibleActivationWarning
from lsakit.perturb import FGSM, GaussianNoise


def build(source: str) -> nn.Module:
    torch.manual_seed(0)
    if source == "timm":
        import timm

        return timm.create_model("resnet18", num_classes=10).eval()  # type: ignore[no-any-return]
    from torchvision.models import resnet18

    return resnet18(num_classes=10).eval()


def data(n_batches: int, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.rand(batch_size, 3, 32, 32, generator=g),
            torch.randint(0, 10, (batch_size,), generator=g),
        )
        for _ in range(n_batches)
    ]


def by_hand(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    kept: list[torch.Tensor] = []
    handles = [
        m.register_forward_hook(lambda _m, _a, out: kept.append(out.detach().clone()))
        for m in model.modules()
        if isinstance(m, nn.ReLU)
    ]
    g = torch.Generator().manual_seed(1)
    start = time.perf_counter()
    try:
        for x, y in batches:
            with torch.no_grad():
                model(x)
            kept.clear()
            noisy = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
            with torch.no_grad():
                model(noisy)
            kept.clear()
            x_req = x.clone().requires_grad_(True)
            for h in handles:  # the attack's forward is not captured
                h.remove()
            loss = F.cross_entropy(model(x_req), y, reduction="none").sum()
            (grad,) = torch.autograd.grad(loss, x_req)
            handles = [
                m.register_forward_hook(lambda _m, _a, out: kept.append(out.detach().clone()))
                for m in model.modules()
                if isinstance(m, nn.ReLU)
            ]
            with torch.no_grad():
                model((x + 8 / 255 * grad.sign()).clamp(0, 1))
            kept.clear()
    finally:
        for h in handles:
            h.remove()
    return time.perf_counter() - start


def with_lsakit(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    perturbations = {"gaussian": GaussianNoise(std=0.1, seed=1), "fgsm": FGSM(model, eps=8 / 255)}
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error", InvisibleActivationWarning)  # none: every call is seen
        analyze(model, batches, perturbations)
    return time.perf_counter() - start


def measure(source: str, n_batches: int, batch_size: int, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` seconds of each, their ratio, and the median of the rounds' ratios;
    the order alternates every round (neither always runs first)."""
    model = build(source)
    batches = data(n_batches, batch_size)
    by_hand(model, batches[:1])  # warm-up
    with_lsakit(model, batches[:1])
    hand, lsa = [], []
    for r in range(repeats):
        if r % 2:
            lsa.append(with_lsakit(model, batches))
            hand.append(by_hand(model, batches))
        else:
            hand.append(by_hand(model, batches))
            lsa.append(with_lsakit(model, batches))
    rounds = [a / b for a, b in zip(lsa, hand, strict=True)]
    return {
        "hand": min(hand),
        "analyze": min(lsa),
        "ratio": min(lsa) / min(hand),
        "ratio_median": statistics.median(rounds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", default="torchvision,timm")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"machine: {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"resnet18, {args.batches} batches of {args.batch_size} at 32×32, Gaussian noise + FGSM")
    for source in args.sources.split(","):
        r = measure(source, args.batches, args.batch_size, args.repeats)
        print(
            f"    {source:12s} by hand {r['hand']:.3f} s   analyze {r['analyze']:.3f} s   "
            f"ratio {r['ratio']:.3f} best-of-{args.repeats}, {r['ratio_median']:.3f} median of "
            f"rounds   (target ≤ 1.05)"
        )


if __name__ == "__main__":
    main()
