"""The trainer: objective + regularizers, schedules, validation, checkpoints, resume.

One loop serves every method (standard, FGSM, fast, PGD, TRADES, MART, APGD, PNI adversarial
training) with or without the AT-LR regularizer (Khalooei et al. 2022, Eq. 13) and the other
penalties (LSP, lasso / group lasso):

    min_θ E[ J(θ, x̂, y) + Σ_{l∈M} γ_l · CM(φ_l(x), φ_l(x̂)) ]

:func:`train` builds the run's pieces from its config (:mod:`lsakit.train.parts`), then runs the
loop of :mod:`lsakit.train.loop` — per epoch: seed, one pass of training steps
(:mod:`lsakit.train.step`), validation — with the callbacks of :mod:`lsakit.train.callbacks`:
MVL selection, ε warm-up, progress, checkpoints, tracking, the log, early stopping.

A run directory (:mod:`lsakit.train.rundir`) holds ``config.yaml``, ``model.safetensors`` (last
epoch), ``best.safetensors`` (best robust validation accuracy), ``metrics.jsonl`` and
``state.pt`` (everything needed to resume). Each epoch's randomness (data order, random starts)
is re-seeded from (seed, epoch), so a resumed run ends with exactly the same weights and metrics
as an uninterrupted one on CPU.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import torch
from torch import nn

from lsakit import data as datasets
from lsakit import distributed, models, speed
from lsakit._html import plural, table
from lsakit._io import atomic_write_text
from lsakit._torch import kept_random_state, seed_everything
from lsakit.config import CONFIG_NAME, TrainConfig, dump_config, load_run_config
from lsakit.defenses.sparsity import enforce_masks_after_steps, masked_layers, sparsity_report
from lsakit.domain import input_domain
from lsakit.errors import ArgumentError
from lsakit.perturb.base import ZeroGradientWarning
from lsakit.tracking import TrackingSetup
from lsakit.tracking import require as require_tracking
from lsakit.train import objectives
from lsakit.train.callbacks import (
    Checkpointing,
    EarlyStopping,
    EpochEndFunction,
    EpochLog,
    EpsWarmup,
    MVLSelection,
    ProgressBar,
    Tracking,
)
from lsakit.train.loop import Callback, Callbacks, Run, Totals, TrainingError, run_epoch
from lsakit.train.parts import (
    Data,
    accuracy,
    build_model,
    class_path,
    companion_regularizers,
    evaluate_epoch,
    layerwise_regularizer,
    load_data,
    make_optimizer,
    objective_params,
    own_model,
    resolve_device,
    scheduler,
)
from lsakit.train.rundir import (
    BEST_NAME,
    CHECKPOINT_NAME,
    METRICS_NAME,
    STATE_NAME,
    ModelRecord,
    ResumePoint,
    check_fits,
    check_run_dir,
    claim_run_dir,
    iter_metrics,
    resume_point,
    resume_state,
)
from lsakit.train.step import training_step


@dataclass
class TrainResult:
    """The trained model, one metrics record per epoch, and where the checkpoints went."""

    model: nn.Module
    metrics: list[dict[str, Any]]
    checkpoint: Path | None
    best_checkpoint: Path | None = None
    regularized_layers: list[str] | None = None

    def __repr__(self) -> str:
        """Returns one line (not the model): its class, the epochs, the last epoch's loss and
        test accuracy, the regularized layers and the checkpoint."""
        last = self.metrics[-1] if self.metrics else {}
        parts = [f"{type(self.model).__name__}, {plural(len(self.metrics), 'epoch')}"]
        if "train_loss" in last:
            parts.append(f"train loss {last['train_loss']:.4f}")
        if last.get("test_accuracy") is not None:
            parts.append(f"test accuracy {last['test_accuracy']:.4f}")
        if self.regularized_layers:
            parts.append(f"regularized {', '.join(self.regularized_layers)}")
        parts.append(f"checkpoint {self.checkpoint}" if self.checkpoint else "no checkpoint")
        return f"TrainResult({'; '.join(parts)})"

    def _repr_html_(self) -> str:
        """Returns Jupyter's display: one row per epoch of :attr:`metrics`, one column per key."""
        keys = list(dict.fromkeys(key for record in self.metrics for key in record))
        rows = [[_cell(record.get(key)) for key in keys] for record in self.metrics]
        where = f" → {self.checkpoint}" if self.checkpoint else ""
        return table(keys, rows, caption=f"training of {type(self.model).__name__}{where}",
                     text_columns=0)  # fmt: skip


def _cell(value: Any) -> str:
    """A metrics value as a table cell: numbers to 4 significant digits, None as —."""
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _in_data_domain(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``train`` under the input domain of its config's data set (lsakit.domain): every
    attack of the objective, the validation attacks and the MVL analysis follow it."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        config = args[0] if args else kwargs["config"]
        assert isinstance(config, TrainConfig)
        with (
            input_domain(datasets.domain(config.dataset, **config.data_options)),
            warnings.catch_warnings(),
        ):
            # Training attacks meet zero gradients routinely (a zero-initialised head, TRADES'
            # KL at its start): that is not the evaluation-time problem the warning is for.
            warnings.simplefilter("ignore", ZeroGradientWarning)
            return fn(*args, **kwargs)

    return wrapper


@_in_data_domain
def train(
    config: TrainConfig,
    out: str | Path | None = None,
    *,
    model: nn.Module | None = None,
    device: str = "auto",
    data_dir: str | Path | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    callbacks: Sequence[Callback] = (),
    tracking: TrackingSetup | None = None,
) -> TrainResult:
    """Train ``config.model`` (or ``model``) on ``config.dataset`` with ``config.method`` (+ AT-LR
    and the other penalties if configured).

    After every epoch: validation (clean and PGD-``val_steps`` robust accuracy on the held-out
    tail of the training split), clean test accuracy, a ``metrics.jsonl`` line, the last and best
    checkpoints and the resume state in ``out``, each written atomically. With ``resume=True``
    the run in ``out`` continues from its last completed epoch: ``config`` must be the run's own
    (:func:`load_run_config`), save ``epochs`` (more extends the run), and ``data_dir`` defaults
    to the directory the run recorded. A directory that already holds a run is refused unless
    ``overwrite=True``, which first deletes that run's files (so a new run that fails early never
    leaves a mix of two runs). A NaN/inf loss raises TrainingError.

    ``model``: train this ``nn.Module`` (in place, moved to the device) instead of building
    ``config.model``, with the same objective, regularizers, validation and checkpoints. The
    run records the module's class path (``package.module:Class``) as its model (in
    ``config.yaml`` and each checkpoint's ``model`` field); ``config.model`` is replaced by it,
    and ``model_kwargs`` and ``init_checkpoint`` (which build or load a registry model) must be
    unset. Load a checkpoint back into the same class: ``net = Class(...)`` then
    ``net.load_state_dict(safetensors.torch.load_file(path))`` — or
    ``lsakit.checkpoint.load_checkpoint(path, model="package.module:Class")`` for a class that
    takes no arguments. Resuming such a run needs a module of the same class and architecture.

    ``callbacks`` (:class:`~lsakit.train.loop.Callback`) hook into the loop after the built-in
    ones; ``on_epoch_end(epoch, record)`` is called after each epoch's files are written.

    ``config.log_to`` also logs the run to TensorBoard / MLflow (:mod:`lsakit.tracking`; names
    and store from ``tracking``): the config, each epoch's ``metrics.jsonl`` record and, at the
    end, the run's files. A resumed run continues the same tracked run.

    The run is seeded from ``config.seed``; the caller's global random generators (Python,
    NumPy, torch) are left as they were found.

    Args:
        config: the run's options (:class:`~lsakit.config.TrainConfig`, e.g. from
            :func:`lsakit.config.load_config`); with ``resume=True`` the run's own config.
        out: the run directory the files go to; None writes nothing (no checkpoints, no resume,
            no tracking).
        model: a module of your own to train in place instead of building ``config.model``
            (see above); None builds ``config.model``.
        device: ``"auto"`` (CUDA when available, else CPU; under torchrun this rank's GPU) or a
            torch device name.
        data_dir: where the data sets are (see :func:`lsakit.data.resolve_data_dir`); None: the
            default, or on resume the directory the run recorded.
        progress: show a progress bar (main process only).
        log: called with each status line (one per epoch, the MVL selection, tracking, early
            stopping), on the main process only; None prints nothing.
        resume: continue the run in ``out`` (needs ``out``; excludes ``overwrite``).
        overwrite: delete the run already in ``out`` before starting.
        on_epoch_end: called as ``on_epoch_end(epoch, record)`` (epochs from 1) with the epoch's
            metrics record, after its files are written.
        callbacks: loop callbacks, called after the built-in ones.
        tracking: names and store of the tracked run when ``config.log_to`` is set; None: the
            defaults of :class:`~lsakit.tracking.TrackingSetup`.

    Returns:
        The :class:`TrainResult`: the trained module (on its device, not wrapped), the metrics
        record of every epoch (on resume, the earlier epochs' too), the last and best checkpoint
        paths (None without ``out``; the best one also when no epoch's score was recorded as a
        best) and the regularized layers (None without AT-LR).
    """
    with kept_random_state():
        return _train(
            config, None if out is None else Path(out), model, device=device,
            data_dir=data_dir, progress=progress, log=log, resume=resume, overwrite=overwrite,
            on_epoch_end=on_epoch_end, callbacks=callbacks, tracking=tracking,
        )  # fmt: skip


def _train(
    config: TrainConfig,
    out: Path | None,
    module: nn.Module | None,
    *,
    device: str,
    data_dir: str | Path | None,
    progress: bool,
    log: Callable[[str], None] | None,
    resume: bool,
    overwrite: bool,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None,
    callbacks: Sequence[Callback],
    tracking: TrackingSetup | None,
) -> TrainResult:
    _check_arguments(config, out, module, resume=resume, overwrite=overwrite)
    if module is not None:
        config = config.model_copy(update={"model": class_path(module)})
    seed_everything(config.seed)  # the same on every rank: the initial weights agree
    dev = resolve_device(device)
    distributed.init(dev)
    main = distributed.is_main_process()
    if not main:
        log, progress = None, False
    if out is not None and not resume:
        claim_run_dir(out, overwrite=overwrite)  # every rank checks before rank 0 writes
        distributed.barrier()
    state = None
    if resume and out is not None:
        state = resume_state(out, config, own_model=module is not None)
        if data_dir is None:
            data_dir = state.get("data_dir")  # where the run found its data (None: not recorded)
    loaded = build_model(config) if module is None else own_model(config, module)
    net = loaded.model.to(dev)
    if config.channels_last:
        net = speed.channels_last_model(net)
    scaler = speed.grad_scaler(config.amp, dev)
    data = load_data(config, data_dir, loaded.preprocessing)
    objective = objectives.build_objective(config.method, **objective_params(config))
    optimizer = make_optimizer(config, net)
    if masked_layers(net):
        # Pruned weights stay exactly zero: re-applied after every step (momentum/Adam state
        # would otherwise move them), see lsakit.defenses.sparsity.
        enforce_masks_after_steps(optimizer, net)
    steps = len(data.train)
    run = Run(
        model=net, net=net, objective=objective, regularizers=companion_regularizers(config),
        optimizer=optimizer, scheduler=scheduler(config, optimizer, steps), scaler=scaler,
        amp=config.amp, channels_last=config.channels_last, steps_per_epoch=steps, out=out,
        log=log,
    )  # fmt: skip
    if config.lr_layers is not None and config.lr_layers != ["mvl"]:
        run.regularized_layers = list(config.lr_layers)
    if out is not None:
        if state is not None:
            if module is not None:
                check_fits(net, state, out)
            _restore(run, state)
        if main and (state is None or load_run_config(out).epochs != config.epochs):
            atomic_write_text(out / CONFIG_NAME, dump_config(config))  # new, or extended
    if run.regularized_layers is not None:  # AT-LR's term comes first
        run.regularizers.insert(0, layerwise_regularizer(config, run.regularized_layers))
    # Under torchrun the objective trains through DDP (its backward averages the gradients);
    # probes, attacks, validation and checkpoints use the bare module, run.net.
    run.model = distributed.wrap(net)
    if config.compile:
        run.model = speed.compiled(run.model)
    hooks = _callbacks(
        config, out, data, dev, own_model=module is not None, resumed=resume, progress=progress,
        data_dir=data_dir, provenance=loaded.provenance, on_epoch_end=on_epoch_end,
        callbacks=callbacks, tracking=tracking,
    )  # fmt: skip
    _fit(run, data, config, hooks)
    best = out / BEST_NAME if out is not None else None
    return TrainResult(
        model=net,
        metrics=run.metrics,
        checkpoint=out / CHECKPOINT_NAME if out is not None else None,
        best_checkpoint=best if best is not None and best.exists() else None,
        regularized_layers=run.regularized_layers,
    )


def _callbacks(
    config: TrainConfig,
    out: Path | None,
    data: Data,
    device: torch.device,
    *,
    own_model: bool,
    resumed: bool,
    progress: bool,
    data_dir: str | Path | None,
    provenance: models.Provenance | None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None,
    callbacks: Sequence[Callback],
    tracking: TrackingSetup | None,
) -> Callbacks:
    """The run's callbacks, in the order they are called: the MVL selection and the ε warm-up
    before an epoch's seeding and steps, then the files of the epoch, its log, the caller's."""
    chosen: list[Callback] = []
    if config.lr_layers == ["mvl"]:
        chosen.append(MVLSelection(config, data, device, own_model=own_model))
    if config.eps_warmup > 0:
        chosen.append(EpsWarmup(config))
    if progress:
        chosen.append(ProgressBar(config.epochs))
    if out is not None:
        record = ModelRecord(config.model, dict(config.model_kwargs), own=own_model)
        initial = provenance.to_json() if provenance is not None else None
        # Recorded in the resume state, so a resume finds the data without being told where.
        recorded_dir = str(datasets.resolve_data_dir(data_dir).absolute())
        chosen.append(Checkpointing(
            out, config, record, data_dir=recorded_dir, initial_weights=initial
        ))  # fmt: skip
        if config.log_to:
            chosen.append(Tracking(config, out, tracking, resumed=resumed))
    chosen.append(EpochLog(config))
    if on_epoch_end is not None:
        chosen.append(EpochEndFunction(on_epoch_end))
    chosen.extend(callbacks)
    if config.early_stopping is not None:
        chosen.append(EarlyStopping(config.early_stopping))
    return Callbacks(chosen)


def _check_arguments(
    config: TrainConfig,
    out: Path | None,
    module: nn.Module | None,
    *,
    resume: bool,
    overwrite: bool,
) -> None:
    if resume and out is None:
        raise ArgumentError("{resume} needs the run directory: give {out}")
    if resume and overwrite:
        raise ArgumentError("{resume} and {overwrite} exclude each other; choose one")
    if module is not None and not isinstance(module, nn.Module):
        raise ArgumentError(
            f"{{model}} must be a torch.nn.Module, got {type(module).__name__}; name a registry "
            "model in the config instead"
        )
    if config.log_to:
        if out is None:
            raise ArgumentError("{log_to} needs a run directory to track; give {out}")
        require_tracking(config.log_to)  # a missing package is said before any training


def _restore(run: Run, state: dict[str, Any]) -> None:
    """Continue the run where ``state`` (``state.pt``) left it."""
    run.net.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    if run.scheduler is not None:
        run.scheduler.load_state_dict(state["scheduler"])
    run.metrics = list(state["metrics"])
    run.best_score, run.bad_epochs = float(state["best_score"]), int(state["bad_epochs"])
    run.epoch = int(state["epoch"])
    if state["lr_layers"] is not None:
        run.regularized_layers = list(state["lr_layers"])
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])


def _fit(run: Run, data: Data, config: TrainConfig, callbacks: Callbacks) -> None:
    """The epochs after the last completed one: each re-seeded from (seed, epoch), one pass of
    training steps over the training data, validation; until the last, or a callback stops."""
    with callbacks.running(run):
        for epoch in range(run.epoch + 1, config.epochs + 1):
            run.epoch = epoch
            callbacks.on_epoch_start(run)
            data.seed_epoch(config, epoch)
            started = time.perf_counter()
            run.model.train()
            totals = run_epoch(run, data.train, callbacks, example=data.example)
            record = _validate(run, config, data, totals.all_reduced(), started)
            callbacks.on_epoch_end(run, record)
            if run.stop:
                break


def _validate(
    run: Run, config: TrainConfig, data: Data, totals: Totals, started: float
) -> dict[str, Any]:
    """The epoch's metrics record, appended to ``run.metrics``, and whether it is the best so far
    (robust validation accuracy; clean where there is no ε)."""
    record = evaluate_epoch(config, run.net, data, run.epoch, totals, started, run.optimizer)
    record["train_eps"] = config.eps * run.eps_scale  # ε of the epoch's last step
    if masked_layers(run.net):
        record["sparsity"] = sparsity_report(run.net)["sparsity"]  # counted from weights
    run.metrics.append(record)
    score = record["val_robust"] if record["val_robust"] is not None else record["val_clean"]
    run.improved = score is not None and score > run.best_score
    if run.improved:
        run.best_score, run.bad_epochs = float(score), 0
    else:
        run.bad_epochs += 1
    return record


__all__ = [
    "BEST_NAME",
    "CHECKPOINT_NAME",
    "METRICS_NAME",
    "STATE_NAME",
    "ResumePoint",
    "TrainResult",
    "TrainingError",
    "accuracy",
    "check_run_dir",
    "iter_metrics",
    "resolve_device",
    "resume_point",
    "train",
    "training_step",
]
