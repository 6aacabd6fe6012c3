"""Studies of the companion methods (LSP, RSR/PNI, RACL): declarative rows, one runner, a report.

A study is a YAML file (``experiments/studies/<name>.yaml``) naming a data set and model, the
training settings shared by every row, the rows (each a set of :class:`~lsakit.config.TrainConfig`
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

Each (row, seed) is a :class:`StudySpec` run by the one grid runner
(:func:`lsakit.experiments.runner.run_grid`): a finished run is reused when asked again, so an
interrupted study continues, and the runs go to an executor (here, local processes or a Ray
cluster); a pruned row waits for its source row of the same seed, nothing else waits. A study
evaluates each run's best checkpoint (:attr:`StudyConfig.evaluated_checkpoint`). Outputs:
``results.json``, ``report.md`` (table of mean ± std over seeds, the notes and the documented
choices) and ``accuracy.png`` (:mod:`lsakit.report.study`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from lsakit import data as datasets
from lsakit import numerics, perturb
from lsakit.errors import ConfigError
from lsakit.evaluate import robust_accuracy
from lsakit.experiments.config import EvaluatedCheckpoint
from lsakit.experiments.executors import Executor, LocalExecutor
from lsakit.experiments.results import StudyResult, StudyRun, percent_metric
from lsakit.experiments.runner import GridRun, RunContext, RunOutcome, RunRecord, RunSpec, run_grid
from lsakit.tracking import TrackingSetup
from lsakit.tracking import require as require_tracking

__all__ = [
    "StudyConfig",
    "StudyResult",
    "StudyRun",
    "StudySpec",
    "evaluate_row",
    "load_study",
    "run_study",
    "study_names",
]


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
    #: which checkpoint of each run is evaluated: ``best`` (the best robust validation accuracy,
    #: the last where a row keeps no validation split) or ``last``; see
    #: :data:`~lsakit.experiments.config.EvaluatedCheckpoint`
    evaluated_checkpoint: EvaluatedCheckpoint = "best"

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
# The runs
# --------------------------------------------------------------------------------------------


class StudySpec(RunSpec):
    """One (row, seed) of a study: an optional architecture search, training, the evaluation."""

    kind: ClassVar[str] = "study"

    dataset: str
    evaluation: Evaluation
    test_limit: int | None
    #: RACL: the search settings (the row's, the profile's over them) whose cell the row trains
    search: dict[str, Any] | None = None

    def execute(self, context: RunContext) -> RunOutcome:
        started = time.perf_counter()
        search_metrics: dict[str, float] = {}
        if self.search is not None:
            from lsakit.nas.study import search_for_study
            from lsakit.train import resolve_device

            search_metrics = search_for_study(
                self.dataset, self.search, self.seed, Path(context.run_dir) / "genotype.json",
                data_dir=context.data_dir, device=resolve_device(context.device),
            )  # fmt: skip
        trained = self.train_and_pick(context)
        metrics = {
            **search_metrics,
            **evaluate_row(
                trained.model, self.evaluation, self.dataset, self.seed,
                test_limit=self.test_limit, data_dir=context.data_dir,
            ),
        }  # fmt: skip
        run = StudyRun(
            row=self.row, seed=self.seed, metrics=metrics, seconds=time.perf_counter() - started,
            checkpoint=str(trained.checkpoint), numerics=numerics.describe(),
        )  # fmt: skip
        final = {f"final/{name}": value for name, value in metrics.items()}
        return RunOutcome(run, final, trained.last_epoch, trained.config.log_to)

    def summary(self, result: Mapping[str, Any]) -> str:
        return ", ".join(
            f"{k} {100 * v:.2f}" if percent_metric(k) else f"{k} {v:.3f}"
            for k, v in result["metrics"].items()
            if not k.endswith("±")
        )


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
    ``study-NAME`` in ``out_dir/mlflow.db`` unless the MLFLOW_* variables say otherwise, run
    ``ROW/seed-S``): training metrics, the row's evaluation, checkpoint and run.json.
    """
    from lsakit.report.study import write_study_report

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
    grid = [
        _grid_run(config, profile, row, seed, out, data_dir, device, log_to)
        for seed in seeds or chosen.seeds
        for row in config.rows
    ]
    finished = run_grid(
        grid, executor or LocalExecutor(jobs), out_dir=out,
        data_dir=None if data_dir is None else Path(data_dir), log=log,
    )  # fmt: skip
    runs = [StudyRun.model_validate(finished[(r.row, r.seed)].record.result) for r in grid]
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


def _grid_run(
    config: StudyConfig,
    profile: str,
    row: StudyRow,
    seed: int,
    out: Path,
    data_dir: str | Path | None,
    device: str,
    log_to: list[str] | None,
) -> GridRun[StudySpec]:
    """One (row, seed) of the study: its spec (a pruned row's from its source row's record)."""
    chosen = config.profiles[profile]
    run_dir = out / "runs" / row.name / f"seed-{seed}"
    values: dict[str, Any] = {
        "model": config.model, "dataset": config.dataset, **config.train, **chosen.train,
        **row.train, "seed": seed,
    }  # fmt: skip
    tracked = values.pop("log_to", None) or []  # tracking is no part of what is reused
    if not isinstance(tracked, list):
        values["log_to"], tracked = tracked, []  # not a list: the run's validation names it
    if chosen.test_limit is not None:
        values["test_limit"] = chosen.test_limit
    if row.search is not None:
        values["model"] = "genotype_net"
        values["model_kwargs"] = {
            **values.get("model_kwargs", {}),
            "genotype": str(run_dir / "genotype.json"),
        }

    def spec(needed: Sequence[RunRecord]) -> StudySpec:
        train = dict(values)
        if row.prune is not None:  # fine-tune the checkpoint its source row evaluated
            (source,) = needed
            train.update(
                init_checkpoint=StudyRun.model_validate(source.result).checkpoint,
                prune_sparsity=row.prune.sparsity, prune_scope=row.prune.scope,
                epochs=row.prune.epochs,
            )  # fmt: skip
        return StudySpec(
            row=row.name, seed=seed, train=train,
            evaluated_checkpoint=config.evaluated_checkpoint, dataset=config.dataset,
            evaluation=config.evaluation, test_limit=chosen.test_limit,
            search=None if row.search is None else {**row.search, **chosen.search},
        )  # fmt: skip

    tags = {"lsakit.study": config.study, "lsakit.profile": profile, "lsakit.row": row.name,
            "lsakit.seed": str(seed)}  # fmt: skip
    context = RunContext(
        run_dir=str(run_dir), data_dir=None if data_dir is None else str(data_dir), device=device,
        log_to=tuple(log_to or tracked),
        tracking=TrackingSetup(experiment=f"study-{config.study}",
                               run_name=f"{row.name}/seed-{seed}", store=out, tags=tags),
    )  # fmt: skip
    after = ((row.prune.source, seed),) if row.prune is not None else ()
    return GridRun(row.name, seed, spec, context, after=after)


def evaluate_row(
    model: nn.Module,
    evaluation: Evaluation,
    dataset: str,
    seed: int,
    *,
    test_limit: int | None = None,
    data_dir: str | Path | None = None,
) -> dict[str, float]:
    """A study's metrics of one trained model (fractions in [0, 1]; ``name±`` = std) on the
    first ``test_limit`` test samples of ``dataset``."""
    from lsakit.defenses.noise import noise_disabled, noise_layers
    from lsakit.defenses.sparsity import masked_layers, sparsity_report

    x, y = datasets.load_tensors(dataset, "test", limit=test_limit, data_dir=data_dir)
    batches = [(x[i : i + 500], y[i : i + 500]) for i in range(0, len(y), 500)]
    stochastic = bool(noise_layers(model))
    repeats = evaluation.repeats if stochastic else 1
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
    specs = list(evaluation.attacks)
    if stochastic:
        specs += evaluation.eot_attacks
    for spec in specs:
        attack = perturb.from_spec(spec, model)
        measure(spec, lambda attack=attack: robust_accuracy(model, batches, attack))  # type: ignore[misc]
    if stochastic:
        first = evaluation.attacks[-1]
        with noise_disabled(model):
            metrics["clean (noise off)"] = robust_accuracy(model, batches, lambda a, b: a)
            attack = perturb.from_spec(first, model)
            metrics[f"{first} (noise off)"] = robust_accuracy(model, batches, attack)
    if evaluation.knn_k is not None:
        from lsakit.train.lsp import embedding_knn_overlap

        n = evaluation.knn_samples
        metrics["knn_overlap"] = embedding_knn_overlap(model, None, x[:n], evaluation.knn_k)
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
