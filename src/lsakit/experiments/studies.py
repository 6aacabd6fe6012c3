"""Studies of the companion methods (LSP, RSR/PNI, RACL): declarative rows, one runner, a report.

A study is a YAML file (``experiments/studies/<name>.yaml``) naming a data set and model, the
training settings shared by every row, the rows (each a set of :class:`~lsakit.train.TrainConfig`
overrides, optionally "prune the model of row R to sparsity s and fine-tune", or "train the cell
found by an architecture search"), the evaluation, and profiles (``quick``, ``full``). Every row
trains with the one trainer (:func:`lsakit.train.train`) — there is no second training loop — and
is evaluated the same way:

* clean accuracy and robust accuracy under each attack spec (samples misclassified clean count as
  errors, AutoAttack's convention), on the first ``test_limit`` test images;
* for stochastic models (noise injection): every number is the mean ± std over ``repeats``
  evaluations with the noise on (the spec: stochastic defences are evaluated with the noise on,
  over repeated runs), plus the ``eot_attacks`` (gradients averaged over noise draws), plus clean
  and the first attack with the noise switched off, for comparison;
* the mechanism metrics the study asks for: the k-NN overlap between input space and the
  penultimate layer (LSP), the sparsity counted from the saved weights (RSR), the Lipschitz
  quantities of a searched cell (RACL).

A finished (row, seed) leaves ``run.json`` and is reused when asked again, so an interrupted study
continues. The runs go to an executor (:mod:`lsakit.experiments.executors`: here, local processes
or a Ray cluster); a pruned row waits for its source row of the same seed, nothing else waits. Outputs: ``results.json``, ``report.md`` (table of mean ± std over seeds, the notes and
the documented choices) and ``accuracy.png``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import torch
import yaml
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from lsakit import __version__, numerics, perturb
from lsakit import data as datasets
from lsakit._io import atomic_write, atomic_write_text
from lsakit._results import JsonResult
from lsakit.checkpoint import load_checkpoint
from lsakit.errors import ConfigError
from lsakit.evaluate import robust_accuracy
from lsakit.experiments.executors import Executor, Job, LocalExecutor
from lsakit.experiments.results import mean_std
from lsakit.tracking import TrackingSetup, log_results
from lsakit.tracking import require as require_tracking
from lsakit.train import train, validate_config

RUN_FILE = "run.json"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PruneStep(_Strict):
    """Prune the model of row ``source`` to ``sparsity`` and fine-tune it for ``epochs``.

    Sparsity 0 fine-tunes without pruning: the dense baseline with the pruned rows' budget.
    """

    source: str
    sparsity: float = Field(ge=0, lt=1)
    scope: str = Field("global", pattern="^(global|per_layer)$")
    epochs: int = Field(1, ge=1)


class StudyRow(_Strict):
    """One row of the study's table."""

    name: str
    train: dict[str, Any] = Field(default_factory=dict)  # TrainConfig overrides
    prune: PruneStep | None = None
    #: RACL: the search settings whose derived cell this row trains (see lsakit.nas)
    search: dict[str, Any] | None = None


class Evaluation(_Strict):
    attacks: list[str] = Field(min_length=1)  # perturbation specs, e.g. "pgd=0.3,steps=20"
    eot_attacks: list[str] = Field(default_factory=list)  # for stochastic models only
    repeats: int = Field(1, ge=1)  # evaluations of a stochastic model (mean ± std)
    knn_k: int | None = Field(None, ge=1)  # k-NN overlap of the penultimate layer
    knn_samples: int = Field(500, ge=2)


class StudyProfile(_Strict):
    seeds: list[int] = Field(min_length=1)
    train: dict[str, Any] = Field(default_factory=dict)
    test_limit: int | None = Field(None, ge=1)
    search: dict[str, Any] = Field(default_factory=dict)
    notes: str = ""
    expected_runtime: str = ""


class StudyConfig(_Strict):
    study: str
    description: str
    dataset: str
    model: str
    train: dict[str, Any]
    rows: list[StudyRow] = Field(min_length=1)
    evaluation: Evaluation
    choices: list[str] = Field(default_factory=list)  # documented choices, for the report
    targets: list[str] = Field(default_factory=list)  # what the issue asks, for the report
    profiles: dict[str, StudyProfile]

    @model_validator(mode="after")
    def _rows_consistent(self) -> StudyConfig:
        names = [r.name for r in self.rows]
        if len(set(names)) != len(names):
            raise ValueError(f"row names repeat: {names}")
        for i, row in enumerate(self.rows):
            if row.prune is not None and row.prune.source not in names[:i]:
                raise ValueError(f"row {row.name} prunes {row.prune.source}, not an earlier row")
        return self


def study_names() -> list[str]:
    """The studies shipped with lsakit."""
    folder = resources.files("lsakit.experiments") / "studies"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def load_study(name_or_path: str) -> StudyConfig:
    """A shipped study by name, or a study YAML file by path; ConfigError names the problem."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        text, source = path.read_text(encoding="utf-8"), str(path)
    elif name_or_path in study_names():
        file = resources.files("lsakit.experiments") / "studies" / f"{name_or_path}.yaml"
        text, source = file.read_text(encoding="utf-8"), f"study {name_or_path}"
    else:
        raise ConfigError(
            f"unknown study {name_or_path!r}; choose one of {', '.join(study_names())} or give "
            "a YAML file"
        )
    try:
        return StudyConfig.model_validate(yaml.safe_load(text))
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0]
        raise ConfigError(f"{source} is not valid YAML: {first}") from None
    except ValidationError as e:
        error = e.errors()[0]
        where = ".".join(str(x) for x in error["loc"]) or "top level"
        message = str(error["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{source} is not a valid study ({where}: {message})") from None


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


class StudyRun(_Strict):
    """One (row, seed): its metrics (fractions; ``±`` entries are stds over repeats)."""

    row: str
    seed: int
    metrics: dict[str, float]
    seconds: float
    checkpoint: str
    #: how the run computed (lsakit.numerics.describe()); None: written before it was recorded
    numerics: dict[str, Any] | None = None


class StudyResult(JsonResult):
    kind: ClassVar[str] = "a study result"
    rewrite: ClassVar[str] = "re-run `lsakit study …` to rewrite it"

    format: int = 1
    lsakit_version: str = __version__
    study: str
    profile: str
    runs: list[StudyRun]
    #: row → metric → (mean, std); std None where nothing varied (one seed, deterministic model)
    summary: dict[str, dict[str, tuple[float, float | None]]]
    #: how the driver computed (lsakit.numerics.describe()); None: written before it was recorded
    numerics: dict[str, Any] | None = None


# --------------------------------------------------------------------------------------------
# The runner
# --------------------------------------------------------------------------------------------


def run_study(
    config: StudyConfig,
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
) -> StudyResult:
    """Train and evaluate every row for every seed (reusing finished runs); write the report.

    The runs go to ``executor`` (default: here one after the other, or ``jobs`` local processes
    with one torch thread each); a pruned row waits for its source row of the same seed only.

    ``log_to`` tracks each (row, seed) run trained here in TensorBoard / MLflow (MLflow experiment
    ``study-NAME`` in ``out_dir/mlruns`` unless the MLFLOW_* variables say otherwise, run
    ``ROW/seed-S``): training metrics, the row's evaluation, checkpoint and run.json.
    """
    require_tracking(log_to or [])
    if executor is not None and jobs != 1:
        raise ConfigError("give jobs or an executor, not both (jobs is the local executor's)")
    if profile not in config.profiles:
        raise ConfigError(
            f"study {config.study} has no profile {profile!r}; choose one of "
            f"{', '.join(config.profiles)}"
        )
    chosen = config.profiles[profile]
    out = Path(out_dir)
    seed_list = seeds or chosen.seeds
    grid = [
        Job(row.name, seed, _StudyTask(
            config=config, profile=profile, row=row.name, seed=seed, out_dir=str(out),
            data_dir=None if data_dir is None else str(data_dir), device=device, log_to=log_to,
        ), after=((row.prune.source, seed),) if row.prune is not None else ())
        for seed in seed_list for row in config.rows
    ]  # fmt: skip

    def done(job: Job[Any], outcome: dict[str, Any]) -> None:
        if log is not None:
            shown = ", ".join(
                f"{k} {100 * v:.2f}" if _percent(k) else f"{k} {v:.3f}"
                for k, v in outcome["metrics"].items()
                if not k.endswith("±")
            )
            log(f"  {job}: {shown}" + (" (reused)" if outcome["reused"] else ""))

    outcomes = (executor or LocalExecutor(jobs)).run(
        _study_run, grid, out_dir=out, data_dir=None if data_dir is None else Path(data_dir),
        on_done=done, log=log,
    )  # fmt: skip
    runs = [
        StudyRun.model_validate({k: v for k, v in outcomes[job.key].items() if k != "reused"})
        for job in grid
    ]
    result = StudyResult(
        study=config.study,
        profile=profile,
        runs=runs,
        summary=_summary(config, runs),
        numerics=numerics.describe(),
    )
    result.save(out / "results.json")
    write_study_report(config, result, out)
    return result


@dataclass(frozen=True)
class _StudyTask:
    """One (row, seed) of a study; plain data, so it can go to another process or node."""

    config: StudyConfig
    profile: str
    row: str
    seed: int
    out_dir: str
    data_dir: str | None
    device: str
    log_to: list[str] | None = None


def _study_run(task: _StudyTask, *needed: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one (row, seed), or reuse its ``run.json``: StudyRun data + ``reused``.

    ``needed``: for a pruned row, the result of its source row (whose checkpoint it starts from).
    """
    config, seed, out = task.config, task.seed, Path(task.out_dir)
    chosen = config.profiles[task.profile]
    row = next(r for r in config.rows if r.name == task.row)
    run_dir = out / "runs" / row.name / f"seed-{seed}"
    checkpoints = {str(r["row"]): str(r["checkpoint"]) for r in needed}
    values = _train_values(config, chosen, row, seed, checkpoints, run_dir)
    cached = _cached(run_dir, values)
    if cached is not None:
        return {**cached.model_dump(), "reused": True}
    run = _run_row(
        config, chosen, row, seed, values, run_dir, task.data_dir, task.device,
        log_to=task.log_to, tracking=_tracking(config, task.profile, row, seed, out),
    )  # fmt: skip
    return {**run.model_dump(), "reused": False}


def _tracking(
    config: StudyConfig, profile: str, row: StudyRow, seed: int, out: Path
) -> TrackingSetup:
    """The names a row's run is tracked under, if it is (``log_to``)."""
    tags = {"lsakit.study": config.study, "lsakit.profile": profile, "lsakit.row": row.name,
            "lsakit.seed": str(seed)}  # fmt: skip
    return TrackingSetup(
        experiment=f"study-{config.study}", run_name=f"{row.name}/seed-{seed}",
        store=out / "mlruns", tags=tags,
    )  # fmt: skip


def _train_values(
    config: StudyConfig,
    profile: StudyProfile,
    row: StudyRow,
    seed: int,
    checkpoints: dict[str, str],
    run_dir: Path,
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "model": config.model, "dataset": config.dataset, **config.train, **profile.train,
        **row.train, "seed": seed,
    }  # fmt: skip
    if profile.test_limit is not None:
        values["test_limit"] = profile.test_limit
    if row.prune is not None:
        values.update(
            init_checkpoint=checkpoints[row.prune.source], prune_sparsity=row.prune.sparsity,
            prune_scope=row.prune.scope, epochs=row.prune.epochs,
        )  # fmt: skip
    if row.search is not None:
        values["model"] = "genotype_net"
        values["model_kwargs"] = {
            **values.get("model_kwargs", {}),
            "genotype": str(run_dir / "genotype.json"),
        }
    return values


def _cached(run_dir: Path, values: dict[str, Any]) -> StudyRun | None:
    path = run_dir / RUN_FILE
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if saved.get("train") != json.loads(json.dumps(values)):
        return None  # different settings: run again
    if saved.get("numerics", "default") != numerics.current():
        return None  # computed under another numerics mode: run again
    return StudyRun.model_validate(saved["run"])


def _run_row(
    config: StudyConfig,
    profile: StudyProfile,
    row: StudyRow,
    seed: int,
    values: dict[str, Any],
    run_dir: Path,
    data_dir: str | Path | None,
    device: str,
    *,
    log_to: list[str] | None = None,
    tracking: TrackingSetup | None = None,
) -> StudyRun:
    started = time.perf_counter()
    search_metrics: dict[str, float] = {}
    if row.search is not None:
        from lsakit.nas.study import search_for_study
        from lsakit.train import resolve_device

        search_metrics = search_for_study(
            config.dataset, {**row.search, **profile.search}, seed, run_dir / "genotype.json",
            data_dir=data_dir, device=resolve_device(device),
        )  # fmt: skip
    train_config = validate_config(values, source=f"row {row.name}")
    if log_to:  # tracking is no part of the values that make a finished run reusable
        train_config = train_config.with_overrides(log_to=log_to)
    # Not cached (or cached with other settings): this run replaces whatever is in run_dir.
    result = train(
        train_config, run_dir, device=device, data_dir=data_dir, overwrite=True, tracking=tracking
    )
    checkpoint = result.best_checkpoint or result.checkpoint
    assert checkpoint is not None
    model, _ = load_checkpoint(checkpoint)
    metrics = {
        **search_metrics,
        **evaluate_row(model, config, profile, seed, data_dir=data_dir, run_dir=run_dir),
    }
    run = StudyRun(
        row=row.name, seed=seed, metrics=metrics, seconds=time.perf_counter() - started,
        checkpoint=str(checkpoint), numerics=numerics.describe(),
    )  # fmt: skip
    saved = {"train": json.loads(json.dumps(values)), "run": run.model_dump()}
    if numerics.current() != "default":  # (absent otherwise: older runs reusable)
        saved["numerics"] = numerics.current()
    atomic_write_text(run_dir / RUN_FILE, json.dumps(saved, indent=2))
    final = {f"final/{name}": value for name, value in metrics.items()}
    last_epoch = int(result.metrics[-1]["epoch"]) if result.metrics else 0
    log_results(train_config.log_to, run_dir, tracking, final, step=last_epoch,
                artifacts=[run_dir / RUN_FILE])  # fmt: skip
    return run


def evaluate_row(
    model: nn.Module,
    config: StudyConfig,
    profile: StudyProfile,
    seed: int,
    *,
    data_dir: str | Path | None = None,
    run_dir: Path | None = None,
) -> dict[str, float]:
    """The study's metrics of one trained model (fractions in [0, 1]; ``name±`` = std)."""
    from lsakit.defenses.noise import noise_disabled, noise_layers
    from lsakit.defenses.sparsity import masked_layers, sparsity_report

    x, y = datasets.load_tensors(
        config.dataset, "test", limit=profile.test_limit, data_dir=data_dir
    )
    batches = [(x[i : i + 500], y[i : i + 500]) for i in range(0, len(y), 500)]
    stochastic = bool(noise_layers(model))
    repeats = config.evaluation.repeats if stochastic else 1
    metrics: dict[str, float] = {}

    def measure(name: str, score: Callable[[], float]) -> None:
        values = []
        for r in range(repeats):
            torch.manual_seed(seed * 1000 + r)
            values.append(score())
        mean = sum(values) / len(values)
        metrics[name] = mean
        if repeats > 1:
            metrics[f"{name}±"] = math.sqrt(
                sum((v - mean) ** 2 for v in values) / (len(values) - 1)
            )

    measure("clean", lambda: robust_accuracy(model, batches, lambda a, b: a))
    specs = list(config.evaluation.attacks)
    if stochastic:
        specs += config.evaluation.eot_attacks
    for spec in specs:
        attack = perturb.from_spec(spec, model)
        measure(spec, lambda attack=attack: robust_accuracy(model, batches, attack))  # type: ignore[misc]
    if stochastic:
        first = config.evaluation.attacks[-1]
        with noise_disabled(model):
            metrics["clean (noise off)"] = robust_accuracy(model, batches, lambda a, b: a)
            attack = perturb.from_spec(first, model)
            metrics[f"{first} (noise off)"] = robust_accuracy(model, batches, attack)
    if config.evaluation.knn_k is not None:
        from lsakit.train.lsp import embedding_knn_overlap

        n = config.evaluation.knn_samples
        metrics["knn_overlap"] = embedding_knn_overlap(model, None, x[:n], config.evaluation.knn_k)
    if masked_layers(model):
        metrics["sparsity"] = float(sparsity_report(model)["sparsity"])
    from lsakit.nas.genotype import GenotypeNetwork, measured_log_lipschitz

    if isinstance(model, GenotypeNetwork):  # RACL: the power-iteration bound of the trained net
        metrics["ln λ_F (power iteration)"] = float(measured_log_lipschitz(model, x.shape[1:]))
    return metrics


def _summary(
    config: StudyConfig, runs: list[StudyRun]
) -> dict[str, dict[str, tuple[float, float | None]]]:
    summary: dict[str, dict[str, tuple[float, float | None]]] = {}
    for row in config.rows:
        mine = [r for r in runs if r.row == row.name]
        keys = [k for k in mine[0].metrics if not k.endswith("±")] if mine else []
        summary[row.name] = {}
        for key in keys:
            values = [r.metrics[key] for r in mine if key in r.metrics]
            mean = sum(values) / len(values)
            std = (
                math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
                if len(values) > 1
                else mine[0].metrics.get(f"{key}±")  # a stochastic model's repeats, else none
            )
            summary[row.name][key] = (mean, std)
    return summary


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _percent(key: str) -> bool:
    return key not in ("sparsity", "knn_overlap") and not key.startswith(("mu_F", "sigma_F", "ln "))


def write_study_report(config: StudyConfig, result: StudyResult, out_dir: str | Path) -> Path:
    """``report.md`` (table, targets, notes, choices) and ``accuracy.png`` in ``out_dir``."""
    out = Path(out_dir)
    keys: list[str] = []
    for row_metrics in result.summary.values():
        for key in row_metrics:
            if key not in keys:
                keys.append(key)
    seeds = sorted({r.seed for r in result.runs})
    lines = [
        f"# {config.study}: {config.description}",
        "",
        f"Profile `{result.profile}`, seeds {seeds}, {config.model} on {config.dataset}. "
        "Accuracies in % (mean ± std over seeds; for stochastic models, over repeated "
        "evaluations when one seed; no ± where nothing varied), sparsity and k-NN overlap as "
        "fractions.",
        "",
        "| row | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for row, row_metrics in result.summary.items():
        cells = []
        for key in keys:
            if key not in row_metrics:
                cells.append("—")
                continue
            mean, std = row_metrics[key]
            scale = 100 if _percent(key) else 1
            digits = 2 if _percent(key) else 3
            cells.append(
                mean_std(scale * mean, None if std is None else scale * std, digits=digits)
            )
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    if config.targets:
        lines += ["", "## What is checked", "", *[f"- {t}" for t in config.targets]]
    notes = config.profiles[result.profile].notes
    if notes:
        lines += ["", "## This profile", "", notes]
    if config.choices:
        lines += ["", "## Documented choices", "", *[f"- {c}" for c in config.choices]]
    lines += ["", "![accuracy](accuracy.png)", ""]
    path = atomic_write_text(out / "report.md", "\n".join(lines))
    _plot(result, out / "accuracy.png")
    return path


def _plot(result: StudyResult, path: Path) -> None:
    fig = study_figure(result)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def study_figure(result: StudyResult) -> Figure:
    """The accuracies of every row as grouped bars (± std where something varied); the legend
    of the metrics above the bars, outside the axes, so it covers none of them."""
    rows = list(result.summary)
    keys = [k for k in next(iter(result.summary.values())) if _percent(k) and "noise off" not in k]
    fig = Figure(
        figsize=(max(6.0, 1.2 * len(rows) * max(1, len(keys)) / 2), 4.4),
        dpi=120,
        layout="constrained",
    )
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(keys))
    for i, key in enumerate(keys):
        means = [100 * result.summary[r].get(key, (0.0, None))[0] for r in rows]
        stds = [result.summary[r].get(key, (0.0, None))[1] for r in rows]
        positions = [j + i * width for j in range(len(rows))]
        errors = [100 * s if s is not None else 0.0 for s in stds]
        ax.bar(positions, means, width, yerr=errors if any(stds) else None, label=key, capsize=2)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))], rows, rotation=20, ha="right")
    ax.set_ylabel("accuracy (%)")
    if keys:
        fig.legend(loc="outside upper center", ncol=min(len(keys), 3), fontsize=7, frameon=False)
    return fig
