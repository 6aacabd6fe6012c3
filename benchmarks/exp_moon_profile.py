"""Moon ``--quick`` profile of ``lsakit reproduce moon``: settings and the measured evidence (issue 3, §4).

Paper Table 2 (Khalooei et al. 2022, arXiv:2202.02626): model A on two moons, rows Normal, the four
base ATs (AT-FGSM, AT-PGD, AT-TRADE, AT-FAST) and each base with LR on one proposal (L0, L1, L2),
scored by FGSM accuracy over ε_raw ∈ {0, .1, .2, .3, .4, .5} (raw ``make_moons`` coordinates,
converted with :func:`lsakit.evaluate.paper_eps` at the scale of the data actually generated) and
the R&G score (their sum, in %). 17 rows × 3 seeds = 51 trainings, through the real trainer
(:func:`lsakit.train.train`, per-epoch validation included) and the real evaluation
(:func:`lsakit.evaluate.fgsm_sweep`, :func:`lsakit.analysis.relative_errors` under
:class:`lsakit.perturb.PGD`).

Targets checked (means over the seeds):

1. Normal clean accuracy ≥ 96 %;
2. for ≥ 3 of the 4 bases, the best proposal's R&G ≥ the base's R&G;
3. per proposal, the regularized layer's relative error under PGD-20 (at the base's training ε,
   batch form, test split) ≤ 50 % of the base AT's;
4. the whole profile fits the runner's budget (≈ 9 single-thread CPU-s per training incl. its
   evaluation; here run on 2 worker processes with 1 torch thread each).

Honesty protocol: γ, epochs, schedule and batch size were tuned on another draw of the moons
(``--data-seed 1``, its test split) and are *reported* on the default draw (``data_seed`` 0, the one
``lsakit reproduce`` uses). One decision did use draw 0: with noise 0.2 its Normal row reached
94.9 % clean, and an RBF-SVC fitted on that very split reaches only 95.8 % (the test split's own
overlap), so noise went to 0.15, re-checked on draw 1 first. ``--set`` overrides any knob for
exploration, e.g. ``--set gamma=0.3 --set noise=0.2 --set 'eps_raw={"fgsm": 0.2, ...}'``. PGD-20
accuracy at ε_raw 0.3 is printed as well, to show whether an FGSM gain is real robustness or masked
gradients.

Measured with :data:`PROFILE` (draw 0, 3 seeds): Normal clean 98.4 %; best proposal L2 for every
base, R&G base → LR-L2: FGSM 408 → 449, PGD 409 → 456, TRADES 411 → 447, FAST 414 → 438 (std of the
LR rows 14–25: some seeds gain ~50, a few ~0); the regularized layer's RE under PGD −74…−91 %;
194 single-thread CPU-s for the 51 runs incl. evaluation (≈ 100 s on 2 idle cores).

Run: ``python benchmarks/exp_moon_profile.py [--seeds 3] [--data-seed 0] [--rows fgsm,pgd]
[--json out.json]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import json
import math
import os
import statistics
import sys
import time
from typing import Any

import torch

from lsakit import data as datasets
from lsakit.analysis import relative_errors
from lsakit.config import TrainConfig
from lsakit.data.moons import DEFAULT_N_SAMPLES, moons_scale
from lsakit.evaluate import fgsm_sweep, paper_eps, rg_score, robust_accuracy
from lsakit.perturb import PGD
from lsakit.train import train

BASES = ("fgsm", "pgd", "trades", "fast")
PROPOSALS = ("L0", "L1", "L2")
PAPER_NAMES = {"fgsm": "AT-FGSM", "pgd": "AT-PGD", "trades": "AT-TRADE", "fast": "AT-FAST"}
#: PGD of the relative-error measurement and of the sanity check (step 2.5·ε/steps, Madry).
RE_PGD_STEPS = 20
CHECK_EPS_RAW = 0.3

#: The recommended quick profile. ε are in RAW moon coordinates here (the paper's units) and are
#: converted to unit coordinates with the scale of the generated data (noise changes it).
PROFILE: dict[str, Any] = {
    # Overlapping moons: noise 0.2 matches the paper's 97 % Normal (an RBF-SVC on 20 000 points
    # reaches 97.2 %) but draw 0's 500 test points cap even an SVC at 95.8 %, below target 1;
    # 0.15 leaves headroom (SVC 98–99 %) while the classes still overlap.
    "noise": 0.15,
    "n_samples": DEFAULT_N_SAMPLES,
    # 20 epochs at a constant lr left Normal at 89–95 % (often a near-linear boundary); 40 epochs
    # with a cosine decay and batch 64 reach 97–99 % at ≈ 1–2 CPU-s.
    "epochs": 40,
    "batch_size": 64,
    "optimizer": "adam",
    "lr": 1e-2,
    "schedule": "cosine",
    "val_steps": 10,
    # Training ε (raw coordinates; the middle of the paper's grid, as exp_lr_choices.py).
    "eps_raw": {"fgsm": 0.3, "pgd": 0.3, "trades": 0.3, "fast": 0.3},
    "steps": {"pgd": 10, "trades": 10},
    "beta": 6.0,
    # γ: 0.1, 0.2, 0.3 all met the targets on the tuning draw; 0.5 collapsed LR-L1/L2 of AT-FGSM
    # and AT-PGD to a constant classifier (10 of 18 runs). 0.2 keeps a factor 2.5 from that cliff.
    "gamma": 0.2,
    "grad_through": "both",
}


def _set(profile: dict[str, Any], assignment: str) -> None:
    """``key=value`` or ``key.sub=value`` (value parsed as JSON when it parses, else a string)."""
    key, _, raw = assignment.partition("=")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    parts = key.split(".")
    target = profile
    for part in parts[:-1]:
        target = target[part]
    if parts[-1] not in target and len(parts) == 1:
        raise SystemExit(f"unknown profile key {key!r}; known: {', '.join(profile)}")
    target[parts[-1]] = value


def data_options(profile: dict[str, Any], data_seed: int) -> dict[str, Any]:
    return {"noise": profile["noise"], "n_samples": profile["n_samples"], "data_seed": data_seed}


def scale_of(profile: dict[str, Any], data_seed: int) -> float:
    return moons_scale(profile["n_samples"], profile["noise"], data_seed)


def row_configs(profile: dict[str, Any], data_seed: int, seed: int) -> dict[str, TrainConfig]:
    """The 17 rows of Table 2 as TrainConfigs (ε in unit coordinates)."""
    scale = scale_of(profile, data_seed)
    common: dict[str, Any] = {
        "model": "model_a",
        "dataset": "moons",
        "data_options": data_options(profile, data_seed),
        "epochs": profile["epochs"],
        "batch_size": profile["batch_size"],
        "optimizer": profile["optimizer"],
        "lr": profile["lr"],
        "schedule": profile["schedule"],
        "val_steps": profile["val_steps"],
        "seed": seed,
    }
    rows = {"Normal": TrainConfig(method="standard", **common)}
    for base in BASES:
        eps = profile["eps_raw"][base] / scale
        method: dict[str, Any] = {"method": base, "eps": eps}
        if base in profile["steps"]:
            steps = int(profile["steps"][base])
            # Madry's step 2.5·ε/steps (the objectives' default α is an absolute MNIST value).
            method.update(steps=steps, alpha=2.5 * eps / steps)
        if base == "trades":
            method["beta"] = profile["beta"]
        rows[PAPER_NAMES[base]] = TrainConfig(**method, **common)
        gamma = profile["gamma"]
        gamma = gamma[base] if isinstance(gamma, dict) else gamma
        for layer in PROPOSALS:
            g = gamma[layer] if isinstance(gamma, dict) else gamma
            rows[f"{PAPER_NAMES[base]}-LR-{layer}"] = TrainConfig(
                **method, **common, lr_layers=[layer], gamma=float(g),
                grad_through=profile["grad_through"],
            )  # fmt: skip
    return rows


def run_one(job: tuple[str, TrainConfig, float, float]) -> dict[str, Any]:
    """Train one row for one seed and evaluate it on the test split."""
    name, config, scale, re_eps = job
    torch.set_num_threads(1)
    started = time.perf_counter()
    cpu_started = time.process_time()
    model = train(config, None).model.eval()
    trained = time.perf_counter()
    x, y = datasets.load_tensors("moons", "test", **config.data_options)
    accs = fgsm_sweep(model, [(x, y)], paper_eps("moons", moons_scale=scale))
    x_pgd = PGD(model, eps=re_eps, steps=RE_PGD_STEPS, seed=0)(x, y)
    re = relative_errors(model, x, x_pgd, reduction="batch")
    check = CHECK_EPS_RAW / scale
    pgd_acc = robust_accuracy(model, [(x, y)], PGD(model, eps=check, steps=RE_PGD_STEPS, seed=0))
    return {
        "row": name,
        "seed": config.seed,
        "accuracies": [100 * a for a in accs.values()],
        "rg": rg_score(accs),
        "re": re,
        "pgd_acc": 100 * pgd_acc,
        "train_s": trained - started,
        "total_s": time.perf_counter() - started,
        # CPU time of this process: what the budget is about, robust to a shared machine.
        "cpu_s": time.process_time() - cpu_started,
    }


def _init_worker() -> None:
    torch.set_num_threads(1)


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(results: list[dict[str, Any]], rows: list[str]) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for row in rows:
        runs = [r for r in results if r["row"] == row]
        if not runs:
            continue
        table[row] = {
            "acc": [
                statistics.fmean(c) for c in zip(*(r["accuracies"] for r in runs), strict=True)
            ],
            "rg": _mean_sd([r["rg"] for r in runs]),
            "re": [statistics.fmean(c) for c in zip(*(r["re"] for r in runs), strict=True)],
            "pgd": _mean_sd([r["pgd_acc"] for r in runs]),
            "seconds": statistics.fmean(r["cpu_s"] for r in runs),
        }
    return table


def report(table: dict[str, dict[str, Any]], wall: float, cpu: float, n_runs: int) -> bool:
    print(
        f"{'row':18s} {'clean':>6s} {'.1':>6s} {'.2':>6s} {'.3':>6s} {'.4':>6s} {'.5':>6s} "
        f"{'R&G':>14s} {'PGD@.3':>12s}  RE L0/L1/L2 (PGD)  CPU-s"
    )
    for row, t in table.items():
        accs = " ".join(f"{a:6.2f}" for a in t["acc"])
        re = "/".join(f"{v:.2f}" for v in t["re"])
        print(
            f"{row:18s} {accs} {t['rg'][0]:7.1f} ± {t['rg'][1]:4.1f} "
            f"{t['pgd'][0]:5.1f} ± {t['pgd'][1]:4.1f}  {re:18s} {t['seconds']:5.1f}"
        )
    ok = True
    print()
    if "Normal" in table:
        clean = table["Normal"]["acc"][0]
        good = clean >= 96
        ok &= good
        print(f"target 1: Normal clean {clean:.2f}% ≥ 96%: {'met' if good else 'NOT met'}")
    wins = 0
    n_bases = 0
    re_fail: list[str] = []
    for base in BASES:
        name = PAPER_NAMES[base]
        if name not in table:
            continue
        n_bases += 1
        base_rg = table[name]["rg"][0]
        props = {p: table[f"{name}-LR-{p}"] for p in PROPOSALS if f"{name}-LR-{p}" in table}
        if not props:
            continue
        best = max(props, key=lambda p: props[p]["rg"][0])
        diff = props[best]["rg"][0] - base_rg
        wins += diff >= 0
        drops = []
        for p, t in props.items():
            k = int(p[1:])
            base_re = table[name]["re"][k]
            drop = 1 - t["re"][k] / base_re if base_re > 0 else math.nan
            drops.append(f"{p} {drop:+.0%}")
            if not drop >= 0.5:
                re_fail.append(f"{name}-LR-{p}")
        print(
            f"{name:9s} base R&G {base_rg:6.1f}; best LR {best} {props[best]['rg'][0]:6.1f} "
            f"({diff:+.1f}); RE drop of the regularized layer: {', '.join(drops)}"
        )
    good = wins >= 3 if n_bases == 4 else wins == n_bases
    ok &= good
    print(f"target 2: best proposal ≥ base for {wins} of {n_bases} bases: "
          f"{'met' if good else 'NOT met'}")  # fmt: skip
    ok &= not re_fail
    print(
        f"target 3: RE drop ≥ 50%: {'met' if not re_fail else 'NOT met by ' + ', '.join(re_fail)}"
    )
    per_run = cpu / max(n_runs, 1)
    print(f"target 4: {n_runs} runs, wall {wall:.0f} s, {per_run:.1f} CPU-s per run "
          f"(budget ≈ 9; 51 runs on 2 processes ≈ {51 * per_run / 2:.0f} s)")  # fmt: skip
    ok &= per_run <= 9
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--data-seed", type=int, default=0, help="draw of the moons (tune on 1)")
    parser.add_argument("--rows", default="all", help="normal,fgsm,pgd,trades,fast or all")
    parser.add_argument("--no-lr", action="store_true", help="base rows only")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="write the raw per-run results here")
    parser.add_argument("--yaml", action="store_true", help="print the resolved configs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    profile = copy.deepcopy(PROFILE)
    for assignment in args.set:
        _set(profile, assignment)
    wanted = set(args.rows.split(",")) if args.rows != "all" else {"normal", *BASES}
    scale = scale_of(profile, args.data_seed)
    jobs: list[tuple[str, TrainConfig, float, float]] = []
    order: list[str] = []
    for seed in range(args.seeds):
        for name, config in row_configs(profile, args.data_seed, seed).items():
            base = next((b for b in BASES if name.startswith(PAPER_NAMES[b])), "normal")
            if base not in wanted or (args.no_lr and "-LR-" in name):
                continue
            # RE under PGD at the base's training ε (Normal: the FGSM base's, for reference).
            re_eps = profile["eps_raw"]["fgsm" if base == "normal" else base] / scale
            jobs.append((name, config, scale, re_eps))
            if name not in order:
                order.append(name)
    if args.yaml:
        for name in order:
            cfg = next(j[1] for j in jobs if j[0] == name)
            print(name, json.dumps(cfg.model_dump(exclude_defaults=True)))
    print(f"profile: {json.dumps(profile)}\ndata_seed {args.data_seed}, scale {scale:.4f}, "
          f"{len(jobs)} runs", flush=True)  # fmt: skip
    started = time.perf_counter()
    # Longest jobs first keeps the two workers balanced at the end.
    jobs.sort(key=lambda j: -(j[1].steps if j[1].method in ("pgd", "trades") else 1))
    if args.workers > 1:
        with concurrent.futures.ProcessPoolExecutor(args.workers, initializer=_init_worker) as ex:
            results = list(ex.map(run_one, jobs))
    else:
        results = [run_one(j) for j in jobs]
    wall = time.perf_counter() - started
    cpu = sum(r["cpu_s"] for r in results)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"profile": profile, "data_seed": args.data_seed, "results": results}, f)
    ok = report(summarize(results, order), wall, cpu, len(results))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
