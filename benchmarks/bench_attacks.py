"""Benchmark of lsakit's attacks against ART's and against a minimal hand-written PGD loop.

On the same model and batch (model B, MNIST-shaped inputs): the time of lsakit's FGSM, PGD-10 and
APGD-100 and of ART's implementations (ratio ART / lsakit: > 1 means lsakit is faster), and lsakit's
PGD-10 against the hand-written loop a researcher would write (ratio lsakit / hand: target ≤ 1.05).
Then, on an adversarially trained model when one is given (``--checkpoint``), the speed-up of not
attacking samples that are already misclassified (AutoAttack's practice).

Interleaved repeats, best of N, ratios from the same run. Run:
``python benchmarks/bench_attacks.py [--batch-size 256] [--repeats 5] [--checkpoint PATH --data-dir DIR]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lsakit import models
from lsakit.perturb import APGD, FGSM, PGD

EPS, ALPHA = 0.3, 0.075


def hand_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> torch.Tensor:
    """The minimal PGD loop (Madry et al. 2018) with a random start."""
    x_adv = (x + torch.empty_like(x).uniform_(-EPS, EPS)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + ALPHA * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - EPS), x + EPS).clamp(0, 1)
    return x_adv


ATTACKS = ("FGSM", "PGD-10", "APGD-100")


def random_setup(batch_size: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Untrained model B and a batch of random MNIST-shaped inputs (seeded)."""
    torch.manual_seed(0)
    model = models.build("model_b").eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (batch_size,), generator=g)
    return model, x, y


def measure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` seconds of lsakit's and ART's FGSM, PGD-10 and APGD-100 (each pair
    interleaved), their ratios ART / lsakit, and lsakit's PGD-10 / the hand-written loop."""
    from art.attacks.evasion import (
        AutoProjectedGradientDescent,
        FastGradientMethod,
        ProjectedGradientDescent,
    )
    from art.estimators.classification import PyTorchClassifier

    xn, yn = x.numpy(), y.numpy()
    classifier = PyTorchClassifier(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
        nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu",
    )  # fmt: skip
    b = x.shape[0]
    runs: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "FGSM": (
            lambda: FGSM(model, eps=EPS)(x, y),
            lambda: FastGradientMethod(classifier, eps=EPS, batch_size=b).generate(xn, y=yn),
        ),
        "PGD-10": (
            lambda: PGD(model, eps=EPS, alpha=ALPHA, steps=10)(x, y),
            lambda: ProjectedGradientDescent(
                classifier, eps=EPS, eps_step=ALPHA, max_iter=10, batch_size=b, verbose=False
            ).generate(xn, y=yn),
        ),
        "APGD-100": (
            lambda: APGD(model, eps=EPS, steps=100)(x, y),
            lambda: AutoProjectedGradientDescent(
                classifier, eps=EPS, eps_step=2 * EPS, max_iter=100, batch_size=b,
                nb_random_init=1, loss_type="cross_entropy", verbose=False,
            ).generate(xn, y=yn),
        ),
    }  # fmt: skip
    result: dict[str, float] = {}
    for name, (ours, theirs) in runs.items():
        ours()
        theirs()  # warm-up
        t = interleaved({"lsakit": ours, "art": theirs}, repeats)
        result[f"{name}_lsakit"], result[f"{name}_art"] = t["lsakit"], t["art"]
        result[f"{name}_ratio"] = t["art"] / t["lsakit"]
    t = interleaved(
        {
            "hand": lambda: hand_pgd(model, x, y, 10),
            "lsakit": lambda: PGD(model, eps=EPS, alpha=ALPHA, steps=10)(x, y),
        },
        repeats,
    )
    result["pgd_vs_hand"] = t["lsakit"] / t["hand"]
    return result


def interleaved(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` seconds of each run, alternating the order every round."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--checkpoint", default=None, help="an adversarially trained MNIST model")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--suite-examples",
        type=int,
        default=0,
        help="with --checkpoint: also time the standard suite on this many test images against "
        "running each of its attacks on every clean-correct image",
    )
    args = parser.parse_args()

    torch.manual_seed(0)
    if args.checkpoint:
        # A trained model on real test images: attacks then do their real work (with random
        # weights and labels most samples start misclassified and APGD skips them).
        from lsakit import data
        from lsakit.checkpoint import load_checkpoint

        model, _ = load_checkpoint(args.checkpoint)
        x, y = data.load_tensors("mnist", "test", limit=args.batch_size, data_dir=args.data_dir)
        source = f"{args.checkpoint} on {args.batch_size} MNIST test images"
    else:
        model, x, y = random_setup(args.batch_size)
        source = f"untrained model_b on {args.batch_size} random MNIST-shaped inputs"
    r = measure(model, x, y, args.repeats)
    print(f"machine: {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"{source}, ε = {EPS}")
    for name in ATTACKS:
        print(
            f"  {name:9s} lsakit {r[name + '_lsakit']:.3f} s   ART {r[name + '_art']:.3f} s   "
            f"ART/lsakit = {r[name + '_ratio']:.2f}"
        )
    print(f"  PGD-10 lsakit / hand-written loop = {r['pgd_vs_hand']:.3f}   (target ≤ 1.05)")

    b = args.batch_size
    if args.checkpoint:
        from lsakit import data
        from lsakit.checkpoint import load_checkpoint
        from lsakit.evaluate import robust_accuracy

        trained, _ = load_checkpoint(args.checkpoint)
        test = data.load("mnist", "test", batch_size=b, limit=1000, data_dir=args.data_dir)
        attack = APGD(trained, eps=EPS, steps=100, seed=0)
        times: dict[bool, list[float]] = {False: [], True: []}
        accuracy: dict[bool, float] = {}
        for only_correct in (False, True, True, False):  # ABBA: fair on a noisy machine
            start = time.perf_counter()
            accuracy[only_correct] = robust_accuracy(
                trained, test, attack, only_correct=only_correct
            )
            times[only_correct].append(time.perf_counter() - start)
        t_all, t_correct = min(times[False]), min(times[True])
        print(f"APGD-100 on {args.checkpoint} (1000 MNIST test images, best of 2 each):")
        print(
            f"  attack every sample {t_all:.1f} s (acc {accuracy[False]:.4f}); only clean-correct "
            f"{t_correct:.1f} s (acc {accuracy[True]:.4f}); speed-up {t_all / t_correct:.2f}×"
        )

    if args.checkpoint and args.suite_examples > 0:
        suite_speedup(args.checkpoint, args.suite_examples, args.data_dir)


def suite_speedup(checkpoint: str, n: int, data_dir: str | None) -> None:
    """The standard suite (each attack only on the samples still robust) against running each of
    its attacks on every clean-correct sample: the saving of AutoAttack's cascade."""
    from lsakit import data
    from lsakit.checkpoint import load_checkpoint
    from lsakit.suite import SUITES, run_suite

    model, _ = load_checkpoint(checkpoint)
    x, y = data.load_tensors("mnist", "test", limit=n, data_dir=data_dir)
    start = time.perf_counter()
    result = run_suite(model, x, y, eps=EPS, batch_size=250)
    t_suite = time.perf_counter() - start
    t_each = 0.0
    for index, entry in enumerate(SUITES["standard"]):
        start = time.perf_counter()
        for first in range(0, n, 250):
            entry.build(model, EPS, index, None)(x[first : first + 250], y[first : first + 250])
        t_each += time.perf_counter() - start
    print(f"standard suite on {checkpoint}, {n} MNIST test images, ε = {EPS}:")
    for a in result.attacks:
        print(f"  {a.label:8s} attacked {a.attacked:5d}  robust {100 * a.robust_accuracy:6.2f}%  "
              f"{a.seconds:7.1f} s")  # fmt: skip
    print(
        f"  suite {t_suite:.1f} s; every attack on every clean-correct sample {t_each:.1f} s; "
        f"speed-up {t_each / t_suite:.2f}×"
    )


if __name__ == "__main__":
    main()
