"""What the portable numerics mode costs: its time ÷ the default mode's, training and attacks.

The mode is chosen once per process (:mod:`lsakit.numerics`), so every measurement is a fresh
worker process of this script in one mode; the rounds alternate the modes, and each job's time is
its best over the rounds. Jobs, on one torch thread (``--threads``), batches of 128:

* AT-PGD-10 training steps of model B (a CNN: its convolutions leave oneDNN in the portable mode),
* AT-PGD-10 training steps of an MLP (784 → 4 × 256 → 10, model A's shape: MKL's GEMMs),
* a PGD-10 attack on model B, and FGSM.

Run: ``python benchmarks/bench_numerics.py [--quick] [--threads 1]``; ``make bench`` runs it too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

JOBS = ("AT-PGD-10 step, model_b", "AT-PGD-10 step, MLP-4", "PGD-10 attack, model_b",
        "FGSM attack, model_b")  # fmt: skip
MODES = ("default", "portable")


def worker(mode: str, threads: int, batches: int) -> dict[str, float]:
    """Seconds of each job in this process, under ``mode`` (best of two after a warm-up)."""
    from lsakit import numerics

    numerics.use(mode)
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from lsakit import models
    from lsakit.perturb import FGSM, PGD
    from lsakit.train.objectives import build_objective
    from lsakit.train.trainer import training_step
    from run_all import mlp

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    images = [(torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))) for _ in range(batches)]
    flat = [(torch.rand(128, 784), torch.randint(0, 10, (128,))) for _ in range(batches)]
    cnn = models.build("model_b")

    def at_steps(model: torch.nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        objective = build_objective("pgd", eps=0.3, alpha=0.01, steps=10)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        model.train()
        for x, y in data:
            training_step(model, objective, None, None, optimizer, x, y)

    def attack(make: type[PGD] | type[FGSM]) -> None:
        model = cnn.eval()
        atk = make(model, eps=0.3, steps=10) if make is PGD else make(model, eps=0.3)
        for x, y in images:
            atk(x, y)

    jobs = {
        JOBS[0]: lambda: at_steps(cnn, images),
        JOBS[1]: lambda: at_steps(mlp(4), flat),
        JOBS[2]: lambda: attack(PGD),
        JOBS[3]: lambda: attack(FGSM),
    }
    out: dict[str, float] = {}
    for name, job in jobs.items():
        job()  # warm-up
        times = []
        for _ in range(2):
            start = time.perf_counter()
            job()
            times.append(time.perf_counter() - start)
        out[name] = min(times)
    return out


def measure(rounds: int, threads: int, batches: int) -> dict[str, dict[str, float]]:
    """{job: {mode: best seconds}} over ``rounds`` alternating worker processes per mode."""
    best: dict[str, dict[str, float]] = {job: {} for job in JOBS}
    env = {k: v for k, v in os.environ.items() if k != "LSAKIT_NUMERICS"}
    for r in range(rounds):
        for mode in MODES if r % 2 == 0 else MODES[::-1]:
            done = subprocess.run(
                [sys.executable, __file__, "--worker", mode, "--threads", str(threads),
                 "--batches", str(batches)],
                env=env, capture_output=True, text=True, check=True, timeout=1800,
            )  # fmt: skip
            for job, seconds in json.loads(done.stdout.splitlines()[-1]).items():
                best[job][mode] = min(seconds, best[job].get(mode, float("inf")))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 batches")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--batches", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads, args.batches)))
        return
    best = measure(2 if args.quick else 4, args.threads, 2 if args.quick else 4)
    for job, seconds in best.items():
        ratio = seconds["portable"] / seconds["default"]
        print(f"{job}: portable / default {ratio:.2f} "
              f"({seconds['portable']:.3f} s vs {seconds['default']:.3f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
