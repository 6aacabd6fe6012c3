"""Square as AutoAttack's standard suite runs it: lsakit's Square against the official code.

On one trained MNIST model and its clean-correct images among the first N test images, runs Square
(L∞, p_init 0.8) alone and prints its robust accuracy and time for:

* ``lsakit-rescaled``: lsakit's Square as it was before the suite followed AutoAttack
  (``queries=5000``: the start + 4999 updates, schedule rescaled to the budget);
* ``lsakit-standard``: the suite's Square now (``queries=5001``: the start + 5000 updates, schedule
  not rescaled, ``rescale_schedule=False``);
* ``official-standard`` and ``official-rescaled``, with ``--autoattack DIR`` (a checkout of
  ``fra31/auto-attack``): ``autoattack.square.SquareAttack`` with ``n_queries=5000`` and
  ``resc_schedule=False`` (what ``AutoAttack(version='standard')`` builds) or ``True``.

Batches of 250 images (AutoAttack's ``bs``), ε 0.3, one seed per line. Run (a short fast-AT model
first; the checkout is not a dependency of lsakit)::

    lsakit train --config configs/mnist-fast-at.yaml --epochs 2 --data-dir ../shared/data \\
        --out runs/square-model
    git clone https://github.com/fra31/auto-attack /tmp/auto-attack
    python benchmarks/exp_square_autoattack.py --checkpoint runs/square-model/model.safetensors \\
        --data-dir ../shared/data --autoattack /tmp/auto-attack --seeds 0 1

Measured (2 CPU threads, torch 2.14.1, fra31/auto-attack at a392200; 987 clean-correct images):
robust accuracy (%) seed 0 / 1, seconds per line 332–392 —

| variant | seed 0 | seed 1 |
|---|---|---|
| lsakit-rescaled | 23.5 | 24.0 |
| lsakit-standard | 25.0 | 25.6 |
| official-standard | 25.4 | 25.0 |
| official-rescaled | 24.2 | 24.1 |
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lsakit import data
from lsakit.checkpoint import load_checkpoint
from lsakit.perturb import Square

EPS, BATCH = 0.3, 250
Runner = Callable[[nn.Module, Tensor, Tensor, int], Tensor]


def lsakit_square(queries: int, rescale: bool) -> Runner:
    def run(model: nn.Module, x: Tensor, y: Tensor, seed: int) -> Tensor:
        attack = Square(model, eps=EPS, queries=queries, rescale_schedule=rescale, seed=seed)
        return attack(x, y)

    return run


def official_square(rescale: bool) -> Runner:
    from autoattack.square import SquareAttack

    def run(model: nn.Module, x: Tensor, y: Tensor, seed: int) -> Tensor:
        attack = SquareAttack(
            model, p_init=0.8, n_queries=5000, eps=EPS, norm="Linf", n_restarts=1,
            seed=seed, verbose=False, device=x.device, resc_schedule=rescale,
        )  # fmt: skip
        adv: Tensor = attack.perturb(x, y)
        return adv

    return run


def robust_accuracy(model: nn.Module, x: Tensor, y: Tensor, run: Runner, seed: int) -> float:
    correct = 0
    for start in range(0, len(x), BATCH):
        xb, yb = x[start : start + BATCH], y[start : start + BATCH]
        x_adv = run(model, xb, yb, seed)
        assert (x_adv - xb).abs().max() <= EPS + 1e-6 and 0 <= x_adv.min() <= x_adv.max() <= 1
        with torch.no_grad():
            correct += int((model(x_adv).argmax(1) == yb).sum())
    return 100.0 * correct / len(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--n-examples", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--autoattack", default=None, help="a checkout of fra31/auto-attack")
    parser.add_argument("--variants", nargs="+", default=None, help="a subset of the variants")
    args = parser.parse_args()

    model, _ = load_checkpoint(args.checkpoint)
    model.eval()
    x, y = data.load_tensors("mnist", "test", limit=args.n_examples, data_dir=args.data_dir)
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    x, y = x[keep], y[keep]
    variants: dict[str, Runner] = {
        "lsakit-rescaled": lsakit_square(5000, True),
        "lsakit-standard": lsakit_square(5001, False),
    }
    if args.autoattack:
        sys.path.insert(0, args.autoattack)
        variants["official-standard"] = official_square(False)
        variants["official-rescaled"] = official_square(True)
    chosen = args.variants or list(variants)
    print(f"{args.checkpoint}: {len(x)} clean-correct of the first {args.n_examples} MNIST test")
    print(f"images, Square alone, ε {EPS}, batches of {BATCH}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")  # fmt: skip
    print("| variant | seed | robust accuracy (%) | time (s) |\n|---|---|---|---|")
    for name in chosen:
        for seed in args.seeds:
            start = time.perf_counter()
            acc = robust_accuracy(model, x, y, variants[name], seed)
            print(
                f"| {name} | {seed} | {acc:.1f} | {time.perf_counter() - start:.0f} |", flush=True
            )


if __name__ == "__main__":
    main()
