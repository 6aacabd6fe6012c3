"""Benchmark: peak memory of ``lsakit.analyze`` on big inputs, against the same forwards by hand.

ResNet-50 and ViT-B/16 (torchvision, random weights) at 224×224, Gaussian noise (σ = 0.1), a few
batches. Each variant runs in a fresh process, which reports its peak resident memory
(``ru_maxrss``) and its resident memory once the model is built (``base``: Python, torch, the
weights):

* ``bare``: per batch, the clean forward and the perturbed forward under ``torch.no_grad()``, no
  hooks: the least any analysis must run;
* ``kept``: the same forwards, written by hand as an LSA needs them: hooks keep every activation
  output of the clean forward (clones, as any capture must: later in-place ops change the live
  tensors) while the perturbed forward runs, and each perturbed output is compared with its clean
  one as it comes;
* ``analyze``: ``lsakit.analyze`` (default layers: every activation call, functional ones
  included), streaming statistics.

Each variant runs ``--batches`` batches, drawn one at a time from a seeded generator (the data is
never held whole), and ``analyze`` runs again on ``--batches-large`` batches: a peak that does not
grow with the data set is the same for both. Targets: analyze's peak ÷ the hand-written ``kept``
peak ≤ 1.5, and analyze's peak on the large data ÷ on the small ≤ 1.05. The peak over ``bare`` is
printed too: an analysis holds the clean representations of a batch while its perturbations run,
which bare forwards do not.

Run: ``python benchmarks/bench_memory.py [--models resnet50,vit_b_16] [--batch-size 8]
[--batches 2] [--batches-large 8]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

SIDE, CLASSES, STD = 224, 1000, 0.1


def build(name: str) -> nn.Module:
    import torchvision

    torch.manual_seed(0)
    return getattr(torchvision.models, name)(num_classes=CLASSES).eval()  # type: ignore[no-any-return]


def batches(n: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    for _ in range(n):
        yield (
            torch.rand(batch_size, 3, SIDE, SIDE, generator=g),
            torch.randint(0, CLASSES, (batch_size,), generator=g),
        )


def _noisy(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return (x + STD * torch.randn(x.shape, generator=g)).clamp(0, 1)


def bare(model: nn.Module, n: int, batch_size: int) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for x, _ in batches(n, batch_size):
            model(x)
            model(_noisy(x, g))


def kept(model: nn.Module, n: int, batch_size: int) -> None:
    """The hand-written capture an analysis needs: clean outputs kept, perturbed compared."""
    activations = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.GELU))]
    clean: list[torch.Tensor] = []
    errors: list[torch.Tensor] = []
    state = {"perturbed": False, "k": 0}

    def hook(_m: nn.Module, _a: Any, out: torch.Tensor) -> None:
        if not state["perturbed"]:
            clean.append(out.detach().clone())
        else:
            c = clean[state["k"]]
            errors.append((out - c).flatten(1).norm(dim=1) / c.flatten(1).norm(dim=1))
            state["k"] += 1

    handles = [m.register_forward_hook(hook) for m in activations]
    g = torch.Generator().manual_seed(1)
    try:
        with torch.no_grad():
            for x, _ in batches(n, batch_size):
                clean.clear()
                state.update(perturbed=False, k=0)
                model(x)
                state["perturbed"] = True
                model(_noisy(x, g))
                errors.clear()
    finally:
        for h in handles:
            h.remove()


def with_lsakit(model: nn.Module, n: int, batch_size: int) -> None:
    from lsakit import analyze
    from lsakit.perturb import GaussianNoise

    analyze(model, batches(n, batch_size), {"gaussian": GaussianNoise(std=STD, seed=1)})


VARIANTS = {"bare": bare, "kept": kept, "analyze": with_lsakit}


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def child(model_name: str, variant: str, n: int, batch_size: int) -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    import lsakit  # noqa: F401  (imported alike in every variant)

    model = build(model_name)
    base = _rss_kib()
    VARIANTS[variant](model, n, batch_size)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base_mib": base / 1024, "peak_mib": peak / 1024}))


def measure(model_name: str, variant: str, n: int, batch_size: int) -> dict[str, float]:
    """One variant in a fresh process: its base and peak resident memory, MiB."""
    # glibc's malloc keeps freed heap pages and fragments them, so a peak RSS wanders by ±5 %
    # from run to run; with every block over 64 KiB mapped and unmapped directly, the resident
    # memory is the live memory (measured: 1195.4, 1195.8, 1195.6 MiB for 2, 6, 12 batches).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run(
        [sys.executable, __file__, "--child", model_name, variant, str(n), str(batch_size)],
        check=True, capture_output=True, text=True, env=env,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def compare(model_name: str, batch_size: int, small: int, large: int) -> dict[str, Any]:
    runs = {v: measure(model_name, v, small, batch_size) for v in VARIANTS}
    runs["analyze_large"] = measure(model_name, "analyze", large, batch_size)
    peak = {k: r["peak_mib"] for k, r in runs.items()}
    above = {k: r["peak_mib"] - r["base_mib"] for k, r in runs.items()}
    return {
        "runs": runs,
        "vs_kept": peak["analyze"] / peak["kept"],
        "vs_bare": peak["analyze"] / peak["bare"],
        "above_base_vs_kept": above["analyze"] / above["kept"],
        "above_base_vs_bare": above["analyze"] / above["bare"],
        "large_vs_small": peak["analyze_large"] / peak["analyze"],
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", default="resnet50,vit_b_16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--batches-large", type=int, default=8)
    args = parser.parse_args()
    print(f"machine: torch {torch.__version__}, {os.cpu_count()} CPUs; peak RSS in MiB")
    for name in args.models.split(","):
        r = compare(name, args.batch_size, args.batches, args.batches_large)
        runs = r["runs"]
        print(f"{name} at {SIDE}×{SIDE}, batch {args.batch_size}, Gaussian noise:")
        for variant, values in runs.items():
            print(
                f"    {variant:14s} base {values['base_mib']:7.0f}   peak {values['peak_mib']:7.0f}"
            )
        print(
            f"    analyze ÷ kept by hand = {r['vs_kept']:.3f} (target ≤ 1.5; above base "
            f"{r['above_base_vs_kept']:.2f})"
        )
        print(
            f"    analyze ÷ bare forwards = {r['vs_bare']:.3f} (above base "
            f"{r['above_base_vs_bare']:.2f})"
        )
        print(
            f"    analyze on {args.batches_large} ÷ {args.batches} batches = "
            f"{r['large_vs_small']:.3f} (target ≤ 1.05)"
        )


if __name__ == "__main__":
    main()
