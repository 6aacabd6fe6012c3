"""Run a reproduction: every row of a table over several seeds, then the results and the report.

For each seed the Normal row is trained first (its model gives the MVL list of the ``-LR-MVL``
rows and the "before" relative-error curves), then every other row. Each run trains with
:func:`lsakit.train.train`, evaluates the paper's FGSM ε sweep (and R&G) on the test split, and
measures the per-layer relative error under the experiment's LSA attack. A finished run leaves
``run.json`` in its directory and is not run again when the same settings are asked for, so an
interrupted reproduction continues where it stopped. Runs can go to several processes (``jobs``),
each with one torch thread, or to a Ray cluster (an ``executor``, see
:mod:`lsakit.experiments.executors`); an ``-LR-MVL`` row waits for the Normal run of its seed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsakit import data as datasets
from lsakit import numerics, perturb
from lsakit._io import atomic_write_text
from lsakit._torch import seed_everything
from lsakit.analysis import analyze
from lsakit.checkpoint import load_checkpoint
from lsakit.errors import ConfigError
from lsakit.evaluate import fgsm_sweep, paper_eps, rg_score
from lsakit.experiments.config import (
    ExperimentConfig,
    RowSpec,
    load_claims,
    load_experiment,
    load_table,
    row_specs,
)
from lsakit.experiments.executors import Executor, Job, LocalExecutor
from lsakit.experiments.results import ExperimentResult, RowResult, RunResult
from lsakit.tracking import TrackingSetup, log_results
from lsakit.tracking import require as require_tracking
from lsakit.train import CHECKPOINT_NAME, TrainConfig, train, validate_config

RUN_FILE = "run.json"


@dataclass(frozen=True)
class _Task:
    """One (row, seed) run; plain data so it can go to another process."""

    row: str
    seed: int
    config: dict[str, Any]  # TrainConfig fields
    run_dir: str
    eps: tuple[float, ...]
    lsa_attack: str
    #: data options of the LSA's test data (the training's, with the experiment's
    #: ``lsa_data_options`` over them)
    lsa_data_options: dict[str, Any]
    test_limit: int | None
    lsa_limit: int | None
    data_dir: str | None
    device: str
    #: the names and MLflow store the run is tracked under, if it is (config["log_to"])
    tracking: TrackingSetup | None = None
    #: the numerics mode it runs under (the executor sets it up in the worker)
    numerics: str = "default"


def train_config(
    config: ExperimentConfig, profile: str, row: RowSpec, seed: int, mvl_checkpoint: str | None
) -> TrainConfig:
    """The training config of one row and seed: shared, per-method, profile overrides."""
    prof = config.profiles[profile]
    values: dict[str, Any] = {
        "model": config.model,
        "dataset": config.dataset,
        "model_kwargs": config.model_kwargs,
        "data_options": config.data_options,
        **config.train,
        **config.methods.get(row.method, {}),
        **prof.train,
        **prof.methods.get(row.method, {}),
        "method": row.method,
        "seed": seed,
        "lr_layers": row.lr_layers,
    }
    if row.method == "standard":
        values["eps"] = 0.0
    if row.lr_layers == ["mvl"]:
        values["mvl_checkpoint"] = mvl_checkpoint
    return validate_config(values, source=f"experiment {config.experiment} ({profile}), {row.name}")


def _run(task: _Task, *needed: dict[str, Any]) -> dict[str, Any]:
    """Train, evaluate and analyse one run (in this or a worker process); returns RunResult data.

    ``needed``: the Normal run's result for an ``-LR-MVL`` row, unused (the row reads the Normal
    checkpoint its config names; the executor only makes it wait for that run).
    """
    run_dir = Path(task.run_dir)
    cached = run_dir / RUN_FILE
    if cached.exists():
        previous = json.loads(cached.read_text(encoding="utf-8"))
        if previous.get("task") == _task_key(task):
            return {**previous["result"], "reused": True}
    started = time.perf_counter()
    config = validate_config(task.config)
    # Not cached (or cached with other settings): this run replaces whatever is in run_dir.
    result = train(
        config, run_dir, device=task.device, data_dir=task.data_dir, overwrite=True,
        tracking=task.tracking,
    )  # fmt: skip
    model = result.model.eval()  # the last epoch's weights, as written to model.safetensors
    test = datasets.load(
        config.dataset, "test", batch_size=256, shuffle=False, limit=task.test_limit,
        data_dir=task.data_dir, **config.data_options,
    )  # fmt: skip
    sweep = fgsm_sweep(model, test, task.eps)
    accuracies = [100 * sweep[e] for e in task.eps]
    seed_everything(task.seed)
    attack = perturb.from_spec(task.lsa_attack, model)
    lsa_data = datasets.load(
        config.dataset, "test", batch_size=256, shuffle=False, limit=task.lsa_limit,
        data_dir=task.data_dir, **task.lsa_data_options,
    )  # fmt: skip
    lsa = analyze(model, lsa_data, {attack.name: attack})
    run = RunResult(
        seed=task.seed,
        checkpoint=str(run_dir / CHECKPOINT_NAME),
        accuracies=accuracies,
        rg=rg_score(sweep),
        relative_errors=lsa.perturbations[0].means(),
        seconds=time.perf_counter() - started,
        numerics=numerics.describe(),
    )
    outcome: dict[str, Any] = {**run.model_dump(), "resolved_layers": result.regularized_layers}
    payload = {"task": _task_key(task), "result": outcome}
    atomic_write_text(cached, json.dumps(payload, indent=2) + "\n")
    if config.log_to:
        final = _final_metrics(task.eps, run, [layer.label for layer in lsa.layers])
        last_epoch = int(result.metrics[-1]["epoch"]) if result.metrics else 0
        log_results(config.log_to, run_dir, task.tracking, final, step=last_epoch,
                    artifacts=[cached])  # fmt: skip
    return outcome


def _final_metrics(
    eps: tuple[float, ...], run: RunResult, labels: list[str]
) -> dict[str, float | None]:
    """A run's evaluation as tracked metrics: R&G, FGSM accuracy (%) per ε, relative error per
    layer under the LSA attack."""
    metrics: dict[str, float | None] = {"final/rg": run.rg}
    for e, accuracy in zip(eps, run.accuracies, strict=True):
        metrics[f"final/fgsm_accuracy_eps_{e:g}"] = accuracy
    for label, error in zip(labels, run.relative_errors, strict=True):
        metrics[f"final/relative_error_{label}"] = error
    return metrics


def _task_key(task: _Task) -> dict[str, Any]:
    """What makes a cached run reusable: the same training config (tracking aside), grid, LSA
    attack and numerics mode."""
    config = {k: v for k, v in task.config.items() if k != "log_to"}
    key = {"config": config, "eps": list(task.eps), "lsa_attack": task.lsa_attack,
           "test_limit": task.test_limit, "lsa_limit": task.lsa_limit}  # fmt: skip
    if task.lsa_data_options != task.config.get("data_options", {}):
        key["lsa_data_options"] = task.lsa_data_options  # (absent otherwise: older runs reusable)
    if task.numerics != "default":
        key["numerics"] = task.numerics  # (absent otherwise: older runs reusable)
    return key


def run_experiment(
    name: str,
    profile: str,
    out_dir: str | Path,
    *,
    seeds: list[int] | None = None,
    jobs: int = 1,
    executor: Executor | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    log: Callable[[str], None] | None = None,
    log_to: list[str] | None = None,
    protocol: str | None = None,
) -> ExperimentResult:
    """Run experiment ``name`` with ``profile`` into ``out_dir``; write and return ``results.json``.

    ``protocol`` names the conventions (data, model head, ε units, LSA perturbations) from the
    experiment's ``protocols`` (Moon: ``strict``, the default, or ``paper``); it is recorded in
    the result and its settings.

    The runs go to ``executor`` (default: ``jobs`` local processes, one torch thread each).

    ``log_to`` (or ``log_to`` in the experiment's training settings) tracks each (row, seed) run
    in TensorBoard / MLflow: MLflow experiment ``name`` in the store ``out_dir/mlruns`` (unless
    ``MLFLOW_TRACKING_URI`` / ``MLFLOW_EXPERIMENT_NAME`` say otherwise), run ``ROW/seed-S``, with
    the training metrics, the final FGSM sweep, R&G and relative errors, checkpoint and run.json.
    Runs reused from an earlier call are not tracked again.
    """
    require_tracking(log_to or [])
    if executor is not None and jobs != 1:
        raise ConfigError("give jobs or an executor, not both (jobs is the local executor's)")
    started = time.perf_counter()
    config = load_experiment(name).under(protocol)
    chosen = config.protocol or config.default_protocol
    if profile not in config.profiles:
        raise ConfigError(
            f"experiment {name} has no profile {profile!r}; profiles: {', '.join(config.profiles)}"
        )
    prof = config.profiles[profile]
    seeds = list(seeds if seeds is not None else prof.seeds)
    out = Path(out_dir)
    eps_paper, published = load_table(config.table)
    eps = _eps_in_units(config, eps_paper)
    rows = row_specs(config, profile)
    say = log or (lambda _: None)
    say(f"{name} ({profile}, protocol {chosen}): {len(rows)} rows × {len(seeds)} seeds → {out}")

    def task(row: RowSpec, seed: int, mvl_checkpoint: str | None = None) -> _Task:
        run_dir = out / "runs" / row.name / f"seed-{seed}"
        cfg = train_config(config, profile, row, seed, mvl_checkpoint)
        if log_to:
            cfg = cfg.with_overrides(log_to=log_to)
        tracking = TrackingSetup(
            experiment=name, run_name=f"{row.name}/seed-{seed}", store=out / "mlruns",
            tags={"lsakit.experiment": name, "lsakit.profile": profile,
                  "lsakit.protocol": chosen, "lsakit.row": row.name,
                  "lsakit.seed": str(seed)},
        )  # fmt: skip
        return _Task(
            row=row.name, seed=seed, config=cfg.model_dump(), run_dir=str(run_dir), eps=tuple(eps),
            lsa_attack=config.lsa_attack, lsa_data_options=_lsa_data_options(config),
            test_limit=prof.test_limit, lsa_limit=prof.lsa_limit,
            data_dir=None if data_dir is None else str(data_dir), device=device, tracking=tracking,
            numerics=numerics.current(),
        )  # fmt: skip

    normal = next(r for r in rows if r.name == "Normal")
    grid = [Job(normal.name, s, task(normal, s)) for s in seeds] + [
        Job(r.name, s, task(r, s, str(out / "runs" / "Normal" / f"seed-{s}" / CHECKPOINT_NAME)),
            after=((normal.name, s),) if r.lr_layers == ["mvl"] else ())
        for r in rows if r.name != "Normal" for s in seeds
    ]  # fmt: skip

    def done(job: Job[Any], outcome: dict[str, Any]) -> None:
        say(f"  {job}: R&G {outcome['rg']:.2f} ({outcome['seconds']:.0f} s)")

    outcomes = (executor or LocalExecutor(jobs, threads=1)).run(
        _run, grid, out_dir=out, data_dir=None if data_dir is None else Path(data_dir),
        on_done=done, log=log,
    )  # fmt: skip

    results = []
    for row in rows:
        runs = [
            _relative_to(out, RunResult.model_validate(_strip(outcomes[(row.name, s)])))
            for s in seeds
        ]
        resolved = outcomes[(row.name, seeds[0])].get("resolved_layers")
        results.append(RowResult(
            name=row.name, method=row.method, base=row.base, lr_layers=row.lr_layers,
            resolved_layers=resolved, runs=runs, published=published.get(row.name),
        ))  # fmt: skip

    normal_lsa, mvl, labels = _normal_lsa(
        config, profile, out, seeds[0], data_dir, device, progress=log is not None
    )
    result = ExperimentResult(
        experiment=name, profile=profile, protocol=chosen, dataset=config.dataset,
        model=config.model,
        eps=eps, eps_paper=eps_paper, seeds=seeds, layer_labels=labels, normal_lsa=normal_lsa,
        mvl=mvl, eta=config.eta, rows=results,
        settings={
            "description": config.description, "protocol": chosen,
            "protocol_description": _protocol_description(config),
            "model_kwargs": config.model_kwargs,
            "train": config.train, "methods": config.methods,
            "profile": prof.model_dump(), "lsa_attack": config.lsa_attack,
            "lsa_perturbations": config.lsa_perturbations, "data_options": config.data_options,
            "lsa_data_options": _lsa_data_options(config),
            "notes": prof.notes, "expected_runtime": prof.expected_runtime,
        },
        seconds=time.perf_counter() - started, published_claims=load_claims(config.table),
        reused_runs=sum(bool(o.get("reused")) for o in outcomes.values()),
        numerics=numerics.describe(),
    )  # fmt: skip
    result.save(out / "results.json")
    return result


def _lsa_data_options(config: ExperimentConfig) -> dict[str, Any]:
    """The data options of the LSA's test data: the experiment's, ``lsa_data_options`` over them."""
    return {**config.data_options, **config.lsa_data_options}


def _protocol_description(config: ExperimentConfig) -> str:
    entry = config.protocols.get(config.protocol or config.default_protocol)
    return entry.description if entry is not None else ""


def _relative_to(out: Path, run: RunResult) -> RunResult:
    """The run with its checkpoint path relative to the results folder (which can then move)."""
    relative = os.path.relpath(run.checkpoint, out)
    return run.model_copy(update={"checkpoint": relative})


def _strip(outcome: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in outcome.items() if k not in ("resolved_layers", "reused")}


def _eps_in_units(config: ExperimentConfig, eps_paper: list[float]) -> list[float]:
    """The paper's grid in the units of the experiment's inputs (Moon: follows the data's
    ``coordinates``; unit coordinates divide the raw ε by the data's scale, see
    :func:`lsakit.evaluate.paper_eps`)."""
    if config.dataset != "moons":
        return list(eps_paper)
    options = config.data_options
    coordinates = str(options.get("coordinates", "unit"))
    if coordinates == "unit":
        scale = datasets.moons_scale(
            options.get("n_samples", datasets.moons.DEFAULT_N_SAMPLES),
            options.get("noise", datasets.moons.DEFAULT_NOISE),
            options.get("data_seed", datasets.moons.DEFAULT_SEED),
        )
        grid = paper_eps("moons", moons_scale=scale)
    else:
        grid = paper_eps("moons", coordinates=coordinates)
    if len(grid) != len(eps_paper):
        raise ConfigError("the Moon table's ε grid differs from lsakit.evaluate.PAPER_EPS")
    return list(grid)


def _normal_lsa(
    config: ExperimentConfig,
    profile: str,
    out: Path,
    seed: int,
    data_dir: str | Path | None,
    device: str,
    *,
    progress: bool = False,
) -> tuple[dict[str, list[float | None]], list[str], list[str]]:
    """LSA of the normally trained model under the noises and attacks: curves, MVL, labels."""
    model, _ = load_checkpoint(out / "runs" / "Normal" / f"seed-{seed}" / CHECKPOINT_NAME)
    seed_everything(seed)
    perturbations = {}
    for spec in config.lsa_perturbations:
        p = perturb.from_spec(spec, model)
        perturbations[p.name] = p
    loader = datasets.load(
        config.dataset, "test", batch_size=256, shuffle=False,
        limit=config.profiles[profile].lsa_limit, data_dir=data_dir,
        **_lsa_data_options(config),
    )  # fmt: skip
    result = analyze(model, loader, perturbations, progress=progress)
    attack_name = perturb.parse_spec(config.lsa_attack)[0]
    mvl = [layer.label for layer in result.most_vulnerable_layers(config.eta, attack_name)]
    curves = {p.name: p.means() for p in result.perturbations}
    return curves, mvl, [layer.label for layer in result.layers]
