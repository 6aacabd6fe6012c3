"""Paper reproductions: an experiment's rows × seeds as run specs, then ``results.json``.

For each seed the Normal row is trained first (its model gives the MVL list of the ``-LR-MVL``
rows and the "before" relative-error curves), then every other row. Each run
(:class:`ReproductionSpec`) trains with :func:`lsakit.train.train`, evaluates the paper's FGSM ε
sweep (and R&G) on the test split, and measures the per-layer relative error under the
experiment's LSA attack, all on the checkpoint the experiment names
(:attr:`~lsakit.experiments.config.ExperimentConfig.evaluated_checkpoint`: the last epoch's
model). The grid goes through the one runner (:func:`lsakit.experiments.runner.run_grid`: finished
runs are reused, an ``-LR-MVL`` row waits for the Normal run of its seed) on ``jobs`` local
processes, each with one torch thread, or on another executor (a Ray cluster, see
:mod:`lsakit.experiments.executors`). The report is :func:`lsakit.report.write_report`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from lsakit import data as datasets
from lsakit import numerics, perturb
from lsakit._frozen import FrozenModel
from lsakit._torch import seed_everything
from lsakit.analysis import analyze
from lsakit.checkpoint import load_checkpoint
from lsakit.config import TrainConfig, validate_config
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
from lsakit.experiments.executors import Executor, LocalExecutor
from lsakit.experiments.results import ExperimentResult, RowResult, RunResult
from lsakit.experiments.runner import GridRun, RunContext, RunOutcome, RunSpec, run_grid
from lsakit.tracking import TrackingSetup
from lsakit.tracking import require as require_tracking
from lsakit.train import CHECKPOINT_NAME


class ReproductionRun(FrozenModel):
    """A reproduction run's record: its :class:`RunResult` and the layers it regularized."""

    run: RunResult
    resolved_layers: list[str] | None  # the layers actually regularized (MVL resolved)


class ReproductionSpec(RunSpec):
    """One (row, seed) of a paper's table: training, the FGSM sweep, the LSA of the trained
    model."""

    kind: ClassVar[str] = "reproduction"

    eps: list[float]  # the FGSM grid, in the units of the model's inputs
    lsa_attack: str
    #: data options of the LSA's test data (the training's, ``lsa_data_options`` over them)
    lsa_data_options: dict[str, Any]
    test_limit: int | None
    lsa_limit: int | None

    def execute(self, context: RunContext) -> RunOutcome:
        """Train the run, then evaluate the FGSM sweep and R&G on the test split and the LSA
        under :attr:`lsa_attack`, on the evaluated checkpoint.

        Args:
            context: where and how it runs (directory, data directory, device, tracking).

        Returns:
            The :class:`ReproductionRun` (FGSM accuracies in %, R&G, per-layer relative
            errors, seconds, layers regularized) and its final metrics to track.
        """
        started = time.perf_counter()
        trained = self.train_and_pick(context)
        config, model = trained.config, trained.model
        test = datasets.load(
            config.dataset, "test", batch_size=256, shuffle=False, limit=self.test_limit,
            data_dir=context.data_dir, **config.data_options,
        )  # fmt: skip
        sweep = fgsm_sweep(model, test, self.eps)
        seed_everything(self.seed)
        attack = perturb.from_spec(self.lsa_attack, model)
        lsa_data = datasets.load(
            config.dataset, "test", batch_size=256, shuffle=False, limit=self.lsa_limit,
            data_dir=context.data_dir, **self.lsa_data_options,
        )  # fmt: skip
        lsa = analyze(model, lsa_data, {attack.name: attack})
        run = RunResult(
            seed=self.seed,
            checkpoint=str(trained.checkpoint),
            accuracies=[100 * sweep[e] for e in self.eps],
            rg=rg_score(sweep),
            relative_errors=lsa.perturbations[0].means(),
            seconds=time.perf_counter() - started,
            numerics=numerics.describe(),
        )
        final: dict[str, float | None] = {"final/rg": run.rg}
        for e, accuracy in zip(self.eps, run.accuracies, strict=True):
            final[f"final/fgsm_accuracy_eps_{e:g}"] = accuracy
        for layer, error in zip(lsa.layers, run.relative_errors, strict=True):
            final[f"final/relative_error_{layer.label}"] = error
        return RunOutcome(
            ReproductionRun(run=run, resolved_layers=trained.regularized_layers),
            final, trained.last_epoch, config.log_to,
        )  # fmt: skip

    def summary(self, result: Mapping[str, Any]) -> str:
        """The progress line of a finished run.

        Args:
            result: the record's ``result``: a :class:`ReproductionRun` as JSON.

        Returns:
            ``R&G <score> (<seconds> s)``.
        """
        run = result["run"]
        return f"R&G {run['rg']:.2f} ({run['seconds']:.0f} s)"


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
    in TensorBoard / MLflow: MLflow experiment ``name`` in the store ``out_dir/mlflow.db`` (unless
    ``MLFLOW_TRACKING_URI`` / ``MLFLOW_EXPERIMENT_NAME`` say otherwise), run ``ROW/seed-S``, with
    the training metrics, the final FGSM sweep, R&G and relative errors, checkpoint and run.json.
    Runs reused from an earlier call are not tracked again.

    Args:
        name: a packaged experiment (:func:`~lsakit.experiments.config.experiment_names`).
        profile: one of the experiment's profiles (``smoke``, ``quick``, ``full``, …).
        out_dir: the output folder: ``runs/ROW/seed-S`` per run, ``results.json``.
        seeds: the seeds to run (None: the profile's).
        jobs: local worker processes (one torch thread each); give ``jobs`` or ``executor``.
        executor: where the runs execute (None: ``jobs`` local processes).
        data_dir: where the data sets are looked for (None: the default data directory).
        device: the device each run trains and evaluates on (``auto``, ``cpu``, ``cuda``, …).
        log: where progress lines go, with progress bars; None: nowhere.
        log_to: tracking backends (``tensorboard``, ``mlflow``); None: the training settings'.
        protocol: a protocol of the experiment (None: its ``default_protocol``).

    Returns:
        The result, also written to ``out_dir/results.json``: every row's runs, the normal
        model's LSA curves and MVL, the settings and the published table.
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
    eps = eps_in_units(config, eps_paper)
    rows = row_specs(config, profile)
    say = log or (lambda _: None)
    say(f"{name} ({profile}, protocol {chosen}): {len(rows)} rows × {len(seeds)} seeds → {out}")

    def run(row: RowSpec, seed: int) -> GridRun[ReproductionSpec]:
        run_dir = out / "runs" / row.name / f"seed-{seed}"
        normal = out / "runs" / "Normal" / f"seed-{seed}" / CHECKPOINT_NAME
        cfg = train_config(
            config, profile, row, seed, None if row.name == "Normal" else str(normal)
        )
        spec = ReproductionSpec(
            row=row.name, seed=seed, train=cfg.model_dump(mode="json", exclude={"log_to"}),
            evaluated_checkpoint=config.evaluated_checkpoint, eps=eps,
            lsa_attack=config.lsa_attack, lsa_data_options=_lsa_data_options(config),
            test_limit=prof.test_limit, lsa_limit=prof.lsa_limit,
        )  # fmt: skip
        tracking = TrackingSetup(
            experiment=name, run_name=f"{row.name}/seed-{seed}", store=out,
            tags={"lsakit.experiment": name, "lsakit.profile": profile,
                  "lsakit.protocol": chosen, "lsakit.row": row.name,
                  "lsakit.seed": str(seed)},
        )  # fmt: skip
        context = RunContext(
            run_dir=str(run_dir), data_dir=None if data_dir is None else str(data_dir),
            device=device, log_to=tuple(log_to or cfg.log_to), tracking=tracking,
        )  # fmt: skip
        after = (("Normal", seed),) if row.lr_layers == ["mvl"] else ()
        return GridRun(row.name, seed, spec, context, after=after)

    normal = next(r for r in rows if r.name == "Normal")
    grid = [run(normal, s) for s in seeds] + [
        run(r, s) for r in rows if r.name != "Normal" for s in seeds
    ]
    finished = run_grid(
        grid, executor or LocalExecutor(jobs, threads=1), out_dir=out,
        data_dir=None if data_dir is None else Path(data_dir), log=log,
    )  # fmt: skip
    records = {
        key: ReproductionRun.model_validate(done.record.result) for key, done in finished.items()
    }

    results = []
    for row in rows:
        runs = [_relative_to(out, records[(row.name, s)].run) for s in seeds]
        results.append(RowResult(
            name=row.name, method=row.method, base=row.base, lr_layers=row.lr_layers,
            resolved_layers=records[(row.name, seeds[0])].resolved_layers, runs=runs,
            published=published.get(row.name),
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
        reused_runs=sum(done.reused for done in finished.values()),
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


def eps_in_units(config: ExperimentConfig, eps_paper: list[float]) -> list[float]:
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
