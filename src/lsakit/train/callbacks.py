"""The callbacks :func:`lsakit.train.train` runs its loop with (:class:`~lsakit.train.loop.Callback`).

In the order the trainer lists them: :class:`MVLSelection` (AT-LR's ``lr_layers mvl``),
:class:`EpsWarmup`, :class:`ProgressBar`, :class:`Checkpointing` (last and best weights,
``metrics.jsonl``, the resume state), :class:`Tracking` (TensorBoard / MLflow), :class:`EpochLog`,
the caller's ``on_epoch_end`` (:class:`EpochEndFunction`) and callbacks, :class:`EarlyStopping`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lsakit import distributed
from lsakit._io import atomic_write_text
from lsakit._progress import Progress
from lsakit.config import CONFIG_NAME, TrainConfig
from lsakit.tracking import Trackers, TrackingSetup, open_trackers
from lsakit.train import objectives
from lsakit.train.loop import Callback, Run, Totals
from lsakit.train.parts import (
    Data,
    describe,
    eps_scale,
    load_for_mvl,
    mvl_regularizer,
    objective_params,
)
from lsakit.train.rundir import (
    BEST_NAME,
    CHECKPOINT_NAME,
    METRICS_NAME,
    STATE_FORMAT,
    ModelRecord,
    save_model,
    save_state,
)


class MVLSelection(Callback):
    """AT-LR on the Most Vulnerable Layers (Algorithm 2): the MVL list of an LSA run of the model
    in ``mvl_checkpoint``, before the first epoch, or else of the model being trained, after
    ``mvl_epoch`` epochs; until then the run trains without AT-LR. A resumed run keeps its list."""

    def __init__(
        self, config: TrainConfig, data: Data, device: torch.device, *, own_model: bool
    ) -> None:
        self.config, self.data, self.device, self.own_model = config, data, device, own_model

    def on_train_start(self, run: Run) -> None:
        if self.config.mvl_checkpoint is not None and run.regularized_layers is None:
            like = run.net if self.own_model else None
            self._select(run, load_for_mvl(self.config, self.device, like=like))

    def on_epoch_start(self, run: Run) -> None:
        if run.regularized_layers is None and run.epoch == self.config.mvl_epoch + 1:
            self._select(run, run.net)

    def _select(self, run: Run, model: nn.Module) -> None:
        regularizer = mvl_regularizer(self.config, model, self.data, run.log)
        run.regularizers.insert(0, regularizer)  # AT-LR's term comes first, as configured ones
        run.regularized_layers = regularizer.layers


class EpsWarmup(Callback):
    """ε (and a configured α) rise linearly over the first ``eps_warmup`` epochs: the objective is
    rebuilt at each step's ε while it changes (:func:`~lsakit.train.parts.eps_scale`)."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def on_step_start(self, run: Run, step: int) -> None:
        iteration = (run.epoch - 1) * run.steps_per_epoch + step
        scale = eps_scale(self.config, iteration, run.steps_per_epoch)
        if scale != run.eps_scale:
            run.eps_scale = scale
            run.objective = objectives.build_objective(
                self.config.method, **objective_params(self.config, scale)
            )


class ProgressBar(Callback):
    """A bar per epoch with the running loss and accuracy (:class:`lsakit._progress.Progress`)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.bar = Progress(True)
        self.task = 0

    def on_train_start(self, run: Run) -> None:
        self.bar.__enter__()

    def on_epoch_start(self, run: Run) -> None:
        self.task = self.bar.add_task(
            f"epoch {run.epoch}/{self.epochs}", run.steps_per_epoch, "steps"
        )

    def on_step_end(self, run: Run, step: int, totals: Totals) -> None:
        self.bar.advance(self.task, note=f"loss {totals.loss / totals.seen:.4f}  "
                         f"acc {totals.correct / totals.seen:.3f}")  # fmt: skip

    def on_epoch_end(self, run: Run, record: dict[str, Any]) -> None:
        self.bar.remove_task(self.task)

    def on_train_end(self, run: Run, error: BaseException | None) -> None:
        self.bar.__exit__(None, None, None)


class Checkpointing(Callback):
    """After every epoch, on the main process: the last weights (``model.safetensors``), the best
    (``best.safetensors``, when the validation score improved), ``metrics.jsonl`` and the resume
    state (``state.pt``), each written atomically; then every rank waits for those files."""

    def __init__(
        self,
        out: Path,
        config: TrainConfig,
        model: ModelRecord,
        *,
        data_dir: str,
        initial_weights: dict[str, Any] | None = None,
    ) -> None:
        self.out, self.config, self.model = out, config, model
        self.data_dir, self.initial_weights = data_dir, initial_weights

    def on_epoch_end(self, run: Run, record: dict[str, Any]) -> None:
        if distributed.is_main_process():
            self._write(run, record)
        distributed.barrier()

    def _write(self, run: Run, record: dict[str, Any]) -> None:
        extra = {"dataset": self.config.dataset, "epoch": run.epoch, "metrics": record,
                 "config": self.config.model_dump(), "lr_layers": run.regularized_layers}  # fmt: skip
        if self.initial_weights is not None:  # the pretrained weights it started from
            extra["initial_weights"] = self.initial_weights
        save_model(self.out / CHECKPOINT_NAME, run.net, self.model, extra)
        if run.improved:
            save_model(self.out / BEST_NAME, run.net, self.model, extra)
        atomic_write_text(
            self.out / METRICS_NAME, "".join(json.dumps(m) + "\n" for m in run.metrics)
        )
        save_state(self.out, {
            "format": STATE_FORMAT, "epoch": run.epoch, "model": run.net.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
            "metrics": run.metrics, "best_score": run.best_score, "bad_epochs": run.bad_epochs,
            "lr_layers": run.regularized_layers,
            "scaler": run.scaler.state_dict() if run.scaler is not None else None,
            # Recorded, so a resume finds the data without being told where.
            "data_dir": self.data_dir,
        })  # fmt: skip


class Tracking(Callback):
    """The run in TensorBoard / MLflow (:mod:`lsakit.tracking`): the config, each epoch's
    ``metrics.jsonl`` record and, at the end, the run's files. A resumed run continues the same
    tracked run. Only the main process tracks."""

    def __init__(
        self, config: TrainConfig, out: Path, setup: TrackingSetup | None, *, resumed: bool
    ) -> None:
        self.config, self.out, self.setup, self.resumed = config, out, setup, resumed
        self.trackers = Trackers()

    def on_train_start(self, run: Run) -> None:
        self.trackers = open_trackers(
            self.config.log_to, self.out, self.setup,
            after_step=run.epoch if self.resumed else None,
            enabled=distributed.is_main_process(),
        )  # fmt: skip
        if run.log is not None and self.trackers:
            run.log(self.trackers.describe())
        try:
            self.trackers.start(self.config.model_dump(), run.metrics)
        except BaseException as error:
            self._close(error)
            raise

    def on_epoch_end(self, run: Run, record: dict[str, Any]) -> None:
        self.trackers.log_metrics(record, step=run.epoch)  # the record metrics.jsonl got

    def on_train_end(self, run: Run, error: BaseException | None) -> None:
        try:
            if error is None:
                self.trackers.log_artifacts(
                    self.out / name
                    for name in (CONFIG_NAME, METRICS_NAME, CHECKPOINT_NAME, BEST_NAME)
                )
        except BaseException as failure:
            self._close(failure)
            raise
        self._close(error)

    def _close(self, error: BaseException | None) -> None:
        """Close with the run's status: FINISHED, KILLED by Ctrl-C, or FAILED."""
        if error is None:
            self.trackers.close("FINISHED")
        else:
            self.trackers.close("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")


class EpochLog(Callback):
    """One line per epoch: its loss, accuracies and validation."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config

    def on_epoch_end(self, run: Run, record: dict[str, Any]) -> None:
        if run.log is not None:  # after the files: a run that printed "epoch k" resumes from k
            run.log(describe(record, self.config))


class EpochEndFunction(Callback):
    """A function ``fn(epoch, record)`` called after each epoch (``train(on_epoch_end=…)``)."""

    def __init__(self, fn: Callable[[int, dict[str, Any]], None]) -> None:
        self.fn = fn

    def on_epoch_end(self, run: Run, record: dict[str, Any]) -> None:
        self.fn(run.epoch, record)


class EarlyStopping(Callback):
    """End the run when the validation score has not improved for ``patience`` epochs."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def on_epoch_end(self, run: Run, record: dict[str, Any]) -> None:
        if run.bad_epochs >= self.patience:
            if run.log is not None:
                run.log(
                    f"early stopping: no better validation accuracy for {run.bad_epochs} epochs"
                )
            run.stop = True
