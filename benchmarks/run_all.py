"""Every benchmark in one run, and ONE table of ratios measured in that run (``make bench``).

Rows:

* analysis overhead — ``analyze`` / the bare clean + perturbed forwards it needs (bench_analysis);
* ``analyze`` on torchvision's and timm's ResNet-18 / the same forwards and attacks by hand, every
  activation call captured (bench_any_model);
* peak memory of ``analyze`` on ResNet-50 and ViT-B/16 at 224×224 / the forwards by hand, and on
  4× the data (bench_memory; not with --quick or --no-memory);
* AT-LR overhead — AT-LR PGD-10 step / AT-PGD-10 step, and lsakit AT-PGD vs a hand-written loop
  (bench_train);
* ART / lsakit for FGSM, PGD-10, APGD-100, and lsakit PGD-10 / a hand-written loop (bench_attacks);
* the portable numerics mode's time / the default mode's, for AT steps and attacks (bench_numerics);
* scaling with data-set size: seconds per sample of ``analyze`` (Gaussian noise + PGD-5) and of an
  AT-PGD-5 epoch over 1k, 2k, 4k samples, with the ratio to 1k (1.00 = exactly linear);
* scaling with depth: model-A-like MLPs (Linear → ELU blocks, width 256, 784 inputs) with 2, 4, 8
  hidden layers: seconds per hidden layer of the same two jobs, ratio to depth 2.

Variants are interleaved (the order rotates every round) and each time is the best of N, which is
robust to other jobs on a shared machine; only ratios from this run are compared.
Run: ``python benchmarks/run_all.py [--quick] [--threads 1] [--no-memory]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_analysis
import bench_any_model
import bench_attacks
import bench_memory
import bench_numerics
import bench_train
from lsakit import analyze
from lsakit.perturb import PGD, GaussianNoise
from lsakit.train.objectives import build_objective
from lsakit.train.trainer import training_step

Batches = list[tuple[torch.Tensor, torch.Tensor]]
WIDTH, INPUTS, CLASSES, BATCH = 256, 784, 10, 128


def mlp(depth: int, seed: int = 0) -> nn.Sequential:
    """Model A's shape (Linear → ELU blocks, a linear head) with ``depth`` hidden layers."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width_in = INPUTS
    for _ in range(depth):
        layers += [nn.Linear(width_in, WIDTH), nn.ELU()]
        width_in = WIDTH
    return nn.Sequential(*layers, nn.Linear(width_in, CLASSES))


def flat_batches(n: int, seed: int = 0) -> Batches:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(min(BATCH, n - s), INPUTS, generator=g),
         torch.randint(0, CLASSES, (min(BATCH, n - s),), generator=g))
        for s in range(0, n, BATCH)
    ]  # fmt: skip


def time_analyze(model: nn.Module, data: Batches) -> float:
    perturbations = {
        "gaussian": GaussianNoise(std=0.3, seed=1),
        "pgd": PGD(model, eps=0.1, alpha=0.025, steps=5, seed=0),
    }
    start = time.perf_counter()
    analyze(model, data, perturbations)
    return time.perf_counter() - start


def time_at_epoch(model: nn.Module, data: Batches) -> float:
    objective = build_objective("pgd", eps=0.1, alpha=0.025, steps=5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    start = time.perf_counter()
    for x, y in data:
        training_step(model, objective, None, None, optimizer, x, y)
    return time.perf_counter() - start


def best_of(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Best time of each run over ``repeats`` rounds, the order rotating every round."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(runs[name]())
    return {name: min(values) for name, values in times.items()}


def scaling(
    sizes: list[int], depths: list[int], depth_samples: int, repeats: int
) -> dict[str, dict[int, float]]:
    """Seconds per sample over ``sizes`` (depth 4) and per hidden layer over ``depths``."""
    out: dict[str, dict[int, float]] = {"analyze_n": {}, "at_n": {}, "analyze_d": {}, "at_d": {}}
    model = mlp(4)
    data = {n: flat_batches(n) for n in sizes}
    time_analyze(model, data[sizes[0]][:2]), time_at_epoch(mlp(4), data[sizes[0]][:2])  # warm-up
    runs: dict[str, Callable[[], float]] = {}
    for n in sizes:
        runs[f"analyze_n {n}"] = lambda n=n: time_analyze(model, data[n])  # type: ignore[misc]
        runs[f"at_n {n}"] = lambda n=n: time_at_epoch(mlp(4), data[n])  # type: ignore[misc]
    nets = {d: mlp(d) for d in depths}
    depth_data = flat_batches(depth_samples)
    for d in depths:
        runs[f"analyze_d {d}"] = lambda d=d: time_analyze(nets[d], depth_data)  # type: ignore[misc]
        runs[f"at_d {d}"] = lambda d=d: time_at_epoch(mlp(d), depth_data)  # type: ignore[misc]
    best = best_of(runs, repeats)
    for key, seconds in best.items():
        kind, value = key.split()
        n = int(value)
        out[kind][n] = seconds / n  # per sample (size rows) or per hidden layer (depth rows)
    return out


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s), Python {platform.python_version()}, "
        f"{date.today().isoformat()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer repeats and batches, no memory (~1 min)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--no-memory", action="store_true", help="skip bench_analysis (b): RSS 1k vs 10k"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 5
    rows: list[tuple[str, str, str]] = []  # (what, ratio, context)
    started = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {text}", file=sys.stderr, flush=True)

    log("bench_analysis: analyze vs bare forwards")
    a = bench_analysis.measure_overhead(5 if args.quick else 10, 256, repeats)
    rows.append(("analyze / bare clean+perturbed forwards (model_b, noise)", f"{a['ratio']:.3f}",
                 f"{a['analyze_s']:.2f} s vs {a['bare_s']:.2f} s; target ≤ 1.2"))  # fmt: skip
    if not (args.quick or args.no_memory):
        log("bench_analysis: memory 1k vs 10k samples")
        m = bench_analysis.measure_memory_growth()
        rows.append(("peak RSS of analyze, 10k vs 1k samples", f"{1 + m['growth']:.3f}",
                     f"{m['peak_10k_mib']:.0f} vs {m['peak_1k_mib']:.0f} MiB; target ≤ 1.10"))  # fmt: skip

    log("bench_any_model: analyze on torchvision's and timm's ResNet-18 vs by hand")
    for source in ("torchvision", "timm"):
        r = bench_any_model.measure(source, 4 if args.quick else 8, 64, repeats + 2)
        rows.append((f"analyze / by hand, {source} resnet18 (noise + FGSM)", f"{r['ratio']:.3f}",
                     f"median of rounds {r['ratio_median']:.3f}; {r['analyze']:.2f} s vs "
                     f"{r['hand']:.2f} s; target ≤ 1.05"))  # fmt: skip
    if not (args.quick or args.no_memory):
        log("bench_memory: ResNet-50 and ViT-B/16 at 224×224, peak RSS")
        os.environ["BENCH_THREADS"] = str(args.threads)
        for name in ("resnet50", "vit_b_16"):
            r = bench_memory.compare(name, 8, 2, 8)
            peak = {k: v["peak_mib"] for k, v in r["runs"].items()}
            rows.append((f"peak RSS of analyze / forwards kept by hand, {name} 224², batch 8",
                         f"{r['vs_kept']:.3f}",
                         f"{peak['analyze']:.0f} vs {peak['kept']:.0f} MiB; target ≤ 1.5"))  # fmt: skip
            rows.append((f"peak RSS of analyze / bare forwards, {name} 224², batch 8",
                         f"{r['vs_bare']:.3f}",
                         f"{peak['analyze']:.0f} vs {peak['bare']:.0f} MiB; above the loaded "
                         f"model {r['above_base_vs_bare']:.2f} (the batch's clean "
                         "representations are held)"))  # fmt: skip
            rows.append((f"peak RSS of analyze, 8 vs 2 batches, {name}",
                         f"{r['large_vs_small']:.3f}",
                         f"{peak['analyze_large']:.0f} vs {peak['analyze']:.0f} MiB; target ≤ "
                         "1.05"))  # fmt: skip

    log("bench_train: AT-PGD, AT-LR, hand-written loop")
    t = bench_train.measure("model_b", 4 if args.quick else 8, 128, repeats + 2)
    rows.append(("AT-LR-L0 PGD-10 step / AT-PGD-10 step (model_b)", f"{t['ratio_lr']:.3f}",
                 f"median of rounds {t['ratio_lr_median']:.3f}; target ≤ 1.05"))  # fmt: skip
    rows.append(("hand-written PGD-AT time / lsakit AT-PGD time", f"{t['ratio_hand']:.3f}",
                 f"= lsakit samples/s ÷ hand's; median {t['ratio_hand_median']:.3f}; "
                 "target ≥ 0.95"))  # fmt: skip

    log("bench_attacks: lsakit vs ART, PGD vs hand-written loop")
    model, x, y = bench_attacks.random_setup(128 if args.quick else 256)
    k = bench_attacks.measure(model, x, y, repeats)
    for name in bench_attacks.ATTACKS:
        rows.append((f"ART / lsakit time, {name} (model_b)", f"{k[name + '_ratio']:.2f}",
                     f"{k[name + '_lsakit']:.3f} s vs ART {k[name + '_art']:.3f} s; "
                     "> 1: lsakit faster"))  # fmt: skip
    rows.append(("lsakit PGD-10 / hand-written PGD-10", f"{k['pgd_vs_hand']:.3f}",
                 "target ≤ 1.05"))  # fmt: skip

    log("bench_numerics: the portable numerics mode vs the default")
    n = bench_numerics.measure(2 if args.quick else 4, args.threads, 2 if args.quick else 4)
    for job, seconds in n.items():
        rows.append((f"portable / default numerics time, {job}",
                     f"{seconds['portable'] / seconds['default']:.2f}",
                     f"{seconds['portable']:.3f} s vs {seconds['default']:.3f} s; the price of "
                     "the same bits on every x86-64 CPU"))  # fmt: skip

    log("scaling with data-set size and depth")
    sizes = [1000, 2000, 4000]
    depths = [2, 4, 8]
    s = scaling(sizes, depths, 1000 if args.quick else 2000, repeats)
    for kind, label in (("analyze_n", "analyze (noise + PGD-5)"), ("at_n", "AT-PGD-5 epoch")):
        base = s[kind][sizes[0]]
        for n in sizes[1:]:
            rows.append((f"{label}: time/sample at {n // 1000}k ÷ at 1k (MLP-4)",
                         f"{s[kind][n] / base:.2f}",
                         f"{1e6 * s[kind][n]:.0f} vs {1e6 * base:.0f} µs/sample; 1.00 = linear"))  # fmt: skip
    for kind, label in (("analyze_d", "analyze (noise + PGD-5)"), ("at_d", "AT-PGD-5 epoch")):
        base = s[kind][depths[0]]
        for d in depths[1:]:
            rows.append((f"{label}: time/layer at depth {d} ÷ depth 2",
                         f"{s[kind][d] / base:.2f}",
                         f"{1e3 * s[kind][d]:.1f} vs {1e3 * base:.1f} ms/layer; < 1: the fixed "
                         "cost (784-wide input layer, head) is shared"))  # fmt: skip
        total = {d: s[kind][d] * d for d in depths}
        first = (total[depths[1]] - total[depths[0]]) / (depths[1] - depths[0])
        second = (total[depths[2]] - total[depths[1]]) / (depths[2] - depths[1])
        rows.append((f"{label}: time per added layer, depth {depths[1]}→{depths[2]} ÷ "
                     f"{depths[0]}→{depths[1]}", f"{second / first:.2f}",
                     f"{1e3 * second:.1f} vs {1e3 * first:.1f} ms per hidden layer; "
                     "1.00 = linear"))  # fmt: skip

    log("done")
    width = max(len(r[0]) for r in rows)
    print(f"machine: {machine()}")
    print(f"run: python benchmarks/run_all.py{' --quick' if args.quick else ''} "
          f"--threads {args.threads}; best of {repeats} interleaved rounds; "
          f"{time.perf_counter() - started:.0f} s in all")  # fmt: skip
    print(f"| {'measurement':{width}} | ratio | context |")
    print(f"|{'-' * (width + 2)}|------:|---------|")
    for what, ratio, context in rows:
        print(f"| {what:{width}} | {ratio:>5} | {context} |")


if __name__ == "__main__":
    main()
