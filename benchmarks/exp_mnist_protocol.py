"""Which conventions fit the paper's MNIST baseline? The fit table behind ``--protocol paper``.

Issue 12. Paper Table 3 (Khalooei et al. 2022, arXiv:2202.02626), row *Normal* (model B without
any defence, FGSM accuracy at ε ∈ {0, .1, .2, .3, .4, .5}), and the normal model's per-layer
relative error under PGD (Sec. 3: ≈ 0.94, 0.92, 0.81, 0.61 on L0-L3, falling with depth). Neither
involves a method of ours — only the data, the model's input convention and the attack
conventions — so they are the only numbers used to choose the ``paper`` protocol of
``configs/mnist.yaml``. The AT and AT-LR rows are never looked at here.

Candidates, each a product of:

* the model's input: model B as published (pixels in [0, 1] straight in, as the authors' training
  code does) or with MNIST's mean/std normalization inside (``model_b(normalize=True)``);
* the input domain: ``unit`` (attacks and noises clamp to [0, 1], strict) or ``unbounded`` (the
  pixels are in [0, 1] but nothing clamps; ``mnist`` data option ``domain``);
* the LSA attack that draws the "PGD" curve: PGD-20 (α 0.025) or a single FGSM step, ε 0.3;
* the monitored layers: the four ReLUs (lsakit's default) or the ReLUs with L1 and L2 read after
  their max-pooling (relu1, pool1, pool2, relu4).

Each model is the Normal row of ``lsakit reproduce mnist`` (the real trainer, the experiment's
quick-profile training; seeds 0 and 1 by default). The Normal row is the FGSM sweep on the whole
test split; the curves are LSA on its first 1000 images. ``rms`` is the root-mean-square
distance of a curve from the paper's (0.94, 0.92, 0.81, 0.61); ``falls`` says whether it
decreases from L0 to L3.

Measured (seeds 0-1, 2 cores shared with other work, 55 min; the full output has every noise
too)::

    Normal row (paper 98.82 / 82.10 / 47.20 / 17.87 / 6.96 / 4.25, R&G 257.20)
    model input, domain             ε=0  ε=0.1  ε=0.2  ε=0.3  ε=0.4  ε=0.5    R&G  max|Δ|
    as published, unit             98.8   86.6   45.4    9.5    1.4    0.6  242.4     8.3
    as published, unbounded        98.8   74.8   22.8    3.2    1.0    0.6  201.3    24.4
    normalized inside, unit        98.8   84.8   42.4   11.2    2.5    1.4  241.2     6.7
    normalized inside, unbounded   98.8   71.9   20.0    3.5    1.2    0.9  196.3    27.2

    relative error L0-L3 (paper PGD 0.94 / 0.92 / 0.81 / 0.61)      L0    L1    L2    L3   rms falls
    as published, unit, ReLUs, PGD-20                            0.516 0.608 0.683 0.677 0.273 no
    as published, unit, ReLUs, FGSM                              0.575 0.639 0.676 0.607 0.240 no
    as published, unbounded, ReLUs, PGD-20                       0.600 0.766 0.801 0.795 0.208 no
    as published, unbounded, ReLUs, FGSM                         0.697 0.816 0.780 0.661 0.135 no
    normalized inside, unit, ReLUs, PGD-20                       0.583 0.647 0.731 0.711 0.233 no
    normalized inside, unit, ReLUs, FGSM                         0.655 0.694 0.724 0.647 0.188 no
    normalized inside, unbounded, ReLUs, PGD-20                  0.789 0.863 0.892 0.886 0.165 no
    normalized inside, unbounded, ReLUs, FGSM                    0.894 0.926 0.847 0.706 0.056 no
    normalized inside, unbounded, after pooling, PGD-20          0.789 0.827 0.839 0.886 0.165 no
    normalized inside, unbounded, after pooling, FGSM            0.894 0.874 0.774 0.706 0.061 yes

Chosen (the ``paper`` protocol of ``configs/mnist.yaml``): the two criteria disagree on the
domain — the Normal row is fitted best with clamping (normalized inside, unit: 6.7 points), the
curve only without it (normalized inside, unbounded, FGSM: rms 0.056) — so the protocol takes
each where it fits: model B normalized inside, training and the FGSM table clamped, the LSA read
unclamped (``lsa_data_options``) with FGSM as its attack; the four ReLUs stay the monitored layers
(monitoring after pooling makes the FGSM curve fall, rms 0.061, but is not a setting of the
experiments). No PGD curve falls with depth under any convention tried. The clamped table fits
the authors' public training code (torchattacks clamps its adversarial images); how their LSA
curves were perturbed is not public, and what the paper ran is not recoverable from its text.

Run: ``python benchmarks/exp_mnist_protocol.py --data-dir ../shared/data [--seeds 2] [--jobs 2]
[--json out.json]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import math
import statistics
import tempfile
import time
from typing import Any

import torch

from lsakit import data as datasets
from lsakit import perturb
from lsakit._torch import seed_everything
from lsakit.analysis import analyze
from lsakit.evaluate import fgsm_sweep
from lsakit.experiments.config import RowSpec, load_experiment, load_table
from lsakit.experiments.reproduction import train_config
from lsakit.train import train

NORMAL = RowSpec(name="Normal", method="standard", base=None, lr_layers=None)
PAPER_PGD_CURVE = (0.94, 0.92, 0.81, 0.61)
MODELS = {"as published": {}, "normalized inside": {"normalize": True}}
DOMAINS = ("unit", "unbounded")
LAYERS = {"ReLUs": None, "after pooling": ["relu1", "pool1", "pool2", "relu4"]}
ATTACKS = {"PGD-20": "pgd=0.3,steps=20,alpha=0.025", "FGSM": "fgsm=0.3"}
#: the noises, to compare strengths (the paper's noise curves are not in our spec's numbers)
NOISES = ("gaussian=0.3", "speckle=0.3", "speckle=1.0", "pepper=0.1", "pepper=0.3", "salt=0.1")


def measure(model_name: str, seed: int, data_dir: str, lsa_limit: int) -> dict[str, Any]:
    """Train one Normal model; its FGSM row and curves under every domain/layers/perturbation."""
    torch.set_num_threads(1)
    base = load_experiment("mnist")
    config = base.model_copy(update={"model_kwargs": {**base.model_kwargs, **MODELS[model_name]}})
    eps, _ = load_table(config.table)
    cfg = train_config(config, "quick", NORMAL, seed, None)
    with tempfile.TemporaryDirectory() as run_dir:
        model = train(cfg, run_dir, overwrite=True, data_dir=data_dir).model.eval()
    out: dict[str, Any] = {"rows": {}, "curves": {}}
    for domain in DOMAINS:
        test = datasets.load(
            "mnist", "test", batch_size=500, shuffle=False, data_dir=data_dir, domain=domain
        )
        sweep = fgsm_sweep(model, test, eps)
        out["rows"][domain] = [100 * sweep[e] for e in eps]
        lsa = datasets.load(
            "mnist", "test", batch_size=250, shuffle=False, data_dir=data_dir, domain=domain,
            limit=lsa_limit,
        )  # fmt: skip
        specs = [*ATTACKS.values(), *NOISES]
        for layers_name, layers in LAYERS.items():
            seed_everything(seed)
            perturbations = {}
            for spec in specs:
                # Pepper/salt write the domain's bound; unbounded inputs name the pixel value.
                if domain == "unbounded" and spec.startswith(("pepper", "salt")):
                    written = "0" if spec.startswith("pepper") else "1"
                    spec_here = f"{spec},value={written}"
                else:
                    spec_here = spec
                perturbations[spec] = perturb.from_spec(spec_here, model)
            result = analyze(model, lsa, perturbations, layers=layers)
            for spec, p in zip(specs, result.perturbations, strict=True):
                out["curves"][f"{domain}|{layers_name}|{spec}"] = p.means()
    return out


def _rms(curve: list[float]) -> float:
    return math.sqrt(
        statistics.fmean((a - b) ** 2 for a, b in zip(curve, PAPER_PGD_CURVE, strict=False))
    )


def _falls(curve: list[float]) -> bool:
    return all(a > b for a, b in itertools.pairwise(curve))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (1 thread each)")
    parser.add_argument("--lsa-limit", type=int, default=1000)
    parser.add_argument("--json", help="also write the tables here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = list(range(args.seeds))
    _, published = load_table("mnist.yaml")
    paper = published["Normal"].accuracies
    started = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
        futures = {
            (m, s): pool.submit(measure, m, s, args.data_dir, args.lsa_limit)
            for m in MODELS
            for s in seeds
        }
    measured = {key: f.result() for key, f in futures.items()}

    def mean_over_seeds(model: str, pick: Any) -> list[float]:
        per_seed = [pick(measured[(model, s)]) for s in seeds]
        return [statistics.fmean(col) for col in zip(*per_seed, strict=True)]

    print(f"Normal row, FGSM accuracy % (mean of seeds {seeds}); paper: "
          + " / ".join(f"{a:.2f}" for a in paper) + f", R&G {sum(paper):.2f}")  # fmt: skip
    head = " ".join(f"{f'ε={e:g}':>6s}" for e in (0, 0.1, 0.2, 0.3, 0.4, 0.5))
    print(f"{'model input, domain':40s} {head} {'R&G':>7s} {'max|Δ|':>7s}")
    table: dict[str, Any] = {"paper_row": paper, "paper_curve": PAPER_PGD_CURVE, "seeds": seeds,
                             "rows": {}, "curves": {}}  # fmt: skip
    for model, domain in itertools.product(MODELS, DOMAINS):
        row = mean_over_seeds(model, lambda r, d=domain: r["rows"][d])
        worst = max(abs(a - b) for a, b in zip(row, paper, strict=True))
        name = f"{model}, {domain}"
        table["rows"][name] = {"accuracies": row, "rg": sum(row), "max_abs_diff": worst}
        print(f"{name:40s} " + " ".join(f"{a:6.1f}" for a in row)
              + f" {sum(row):7.1f} {worst:7.1f}")  # fmt: skip
    print()
    print(f"Normal model's relative error per layer L0-L3 (mean of seeds {seeds}, first "
          f"{args.lsa_limit} test images); paper PGD: "
          + " / ".join(f"{v:.2f}" for v in PAPER_PGD_CURVE))  # fmt: skip
    print(f"{'model input, domain, layers, perturbation':62s} {'L0':>5s} {'L1':>5s} {'L2':>5s} "
          f"{'L3':>5s} {'rms':>5s} falls")  # fmt: skip
    for model, domain, layers in itertools.product(MODELS, DOMAINS, LAYERS):
        for spec in [*ATTACKS.values(), *NOISES]:
            label = next((k for k, v in ATTACKS.items() if v == spec), spec)
            curve = mean_over_seeds(model, lambda r, k=f"{domain}|{layers}|{spec}": r["curves"][k])
            name = f"{model}, {domain}, {layers}, {label}"
            entry = {"curve": curve, "rms": _rms(curve), "falls": _falls(curve)}
            table["curves"][name] = entry
            marker = "yes" if entry["falls"] else "no"
            print(f"{name:62s} " + " ".join(f"{v:5.3f}" for v in curve)
                  + f" {entry['rms']:5.3f} {marker}")  # fmt: skip
    print(f"({time.perf_counter() - started:.0f} s for {len(MODELS)} models × {len(seeds)} seeds)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(table, f, indent=2)


if __name__ == "__main__":
    main()
