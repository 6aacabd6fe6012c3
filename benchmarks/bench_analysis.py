"""Benchmark of ``lsakit.analyze``: overhead over bare forward passes, and memory vs data size.

(a) time of ``analyze`` over N batches with one noise perturbation, divided by the time of the two
    bare forward passes it needs (clean + perturbed, same noise) over the same batches. Target ≤ 1.2.
(b) peak resident memory of an analysis over 1k and over 10k samples, each in a fresh process, with
    data generated batch by batch (so the data set itself takes no memory), sampled at every
    batch. Target: within 10%.

Ratios are measured in the same run on the same machine; absolute times are for context only.
Run: ``python benchmarks/bench_analysis.py [--batches 20] [--batch-size 256] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator

import torch

from lsakit import analyze, models
from lsakit.perturb import GaussianNoise


def batches(
    n_samples: int, batch_size: int, seed: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """MNIST-shaped batches generated on the fly (deterministic), so data costs no memory."""
    g = torch.Generator().manual_seed(seed)
    for start in range(0, n_samples, batch_size):
        n = min(batch_size, n_samples - start)
        yield torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def time_analysis(model: torch.nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    noise = GaussianNoise(std=0.3, seed=1)
    start = time.perf_counter()
    analyze(model, data, {"gaussian": noise})
    return time.perf_counter() - start


def time_bare(model: torch.nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    noise = GaussianNoise(std=0.3, seed=1)
    start = time.perf_counter()
    with torch.no_grad():
        for x, y in data:
            x_noisy = noise(x, y)
            model(x)
            model(x_noisy)
    return time.perf_counter() - start


def current_rss_mib() -> float:
    """The resident set size now (Linux /proc), unlike ru_maxrss which never goes down."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def memory_child(n_samples: int, batch_size: int) -> None:
    """Run one analysis, sampling the RSS at every batch; print before/peak (MiB) as JSON.

    ru_maxrss cannot be used for the difference: importing torch sets a high-water mark above
    what an analysis needs. The RSS is sampled as each batch is requested, i.e. after the
    previous batch's clean and perturbed representations were in memory.
    """
    model = models.build("model_b").eval()
    before = current_rss_mib()
    samples: list[float] = []

    def watched() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in batches(n_samples, batch_size):
            samples.append(current_rss_mib())
            yield batch
        samples.append(current_rss_mib())

    analyze(model, watched(), {"gaussian": GaussianNoise(std=0.3)})
    print(json.dumps({"before_mib": before, "peak_mib": max(samples)}))


def measure_memory(n_samples: int, batch_size: int) -> dict[str, float]:
    cmd = [
        sys.executable,
        __file__,
        "--memory-child",
        str(n_samples),
        "--batch-size",
        str(batch_size),
    ]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def measure_overhead(batch_count: int, batch_size: int, repeats: int) -> dict[str, float]:
    """(a): best-of-``repeats`` seconds of the bare forwards and of ``analyze``, and their ratio."""
    torch.manual_seed(0)
    model = models.build("model_b").eval()
    data = list(batches(batch_count * batch_size, batch_size))
    time_bare(model, data[:2])  # warm-up
    time_analysis(model, data[:2])
    bare, lsa = [], []
    for _ in range(repeats):  # interleaved, best of N: robust to a noisy shared machine
        bare.append(time_bare(model, data))
        lsa.append(time_analysis(model, data))
    return {"bare_s": min(bare), "analyze_s": min(lsa), "ratio": min(lsa) / min(bare)}


def measure_memory_growth(batch_size: int = 250) -> dict[str, float]:
    """(b): peak RSS of an analysis over 1k and 10k samples, fresh processes."""
    small = measure_memory(1_000, batch_size)
    large = measure_memory(10_000, batch_size)
    return {
        "peak_1k_mib": small["peak_mib"],
        "peak_10k_mib": large["peak_mib"],
        "growth": large["peak_mib"] / small["peak_mib"] - 1,
        "extra_1k_mib": small["peak_mib"] - small["before_mib"],
        "extra_10k_mib": large["peak_mib"] - large["before_mib"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        memory_child(args.memory_child, args.batch_size)
        return

    a = measure_overhead(args.batches, args.batch_size, args.repeats)
    print(f"machine: {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"(a) model_b, {args.batches} batches of {args.batch_size}, Gaussian noise")
    print(
        f"    bare clean+perturbed forwards: {a['bare_s']:.3f} s   analyze: {a['analyze_s']:.3f} s"
    )
    print(f"    ratio analyze / bare forwards = {a['ratio']:.3f}   (target ≤ 1.2)")

    b = measure_memory_growth()
    print("(b) peak RSS during an analysis, fresh process each (model_b, batches of 250)")
    print(f"    1k samples: {b['peak_1k_mib']:.1f} MiB   10k samples: {b['peak_10k_mib']:.1f} MiB")
    print(f"    10k vs 1k: {b['growth']:+.1%}   (target within ±10%)")
    print(
        f"    peak above the process's own baseline (imports + model): 1k {b['extra_1k_mib']:.1f} "
        f"MiB, 10k {b['extra_10k_mib']:.1f} MiB"
    )


if __name__ == "__main__":
    main()
