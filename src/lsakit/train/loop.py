"""The training loop: a pass over the data, one :func:`~lsakit.train.step.training_step` per batch,
and the :class:`Callback` hooks everything else of a run plugs into.

:func:`run_epoch` is the loop both :func:`lsakit.train.train` and :func:`lsakit.text.train_epoch`
run. A :class:`Run` is what the loop and the callbacks share: the model, the objective, the
regularizers, the optimizer, the epoch and the validation bookkeeping. Callbacks
(:mod:`lsakit.train.callbacks`: checkpoints, early stopping, tracking, MVL selection, ε warm-up,
progress, the log) change the run through it — e.g. ``run.objective``, ``run.regularizers`` or
``run.stop``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lsakit import distributed, speed
from lsakit._torch import model_device
from lsakit.config import Amp
from lsakit.errors import LsakitError
from lsakit.probe import LayerProbe
from lsakit.train.objectives import Objective
from lsakit.train.regularizers import Regularizer
from lsakit.train.rundir import CHECKPOINT_NAME
from lsakit.train.step import NonFiniteLoss, prepare_regularizers, training_step


class TrainingError(LsakitError):
    """Training cannot go on (e.g. a NaN loss); the last good checkpoint is kept."""


@dataclass
class Run:
    """The state of one training run, shared by the loop and its callbacks."""

    #: what the objective trains through: the module itself, or its DDP / compiled wrapper
    model: nn.Module
    #: the bare module: probes, attacks, validation and checkpoints use it
    net: nn.Module
    objective: Objective
    #: the terms added to the objective's loss, in this order
    regularizers: list[Regularizer]
    optimizer: torch.optim.Optimizer
    #: stepped once per iteration (None: a constant learning rate)
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    scaler: torch.amp.GradScaler | None = None
    amp: Amp = "off"
    channels_last: bool = False
    #: the current epoch (1-based; the last completed one between epochs, 0 before the first)
    epoch: int = 0
    steps_per_epoch: int = 0
    #: the run directory (None: nothing is written)
    out: Path | None = None
    log: Callable[[str], None] | None = None
    #: the ε factor the objective was built with (ε warm-up)
    eps_scale: float = 1.0
    #: the layers AT-LR regularizes as configured or selected (None: no AT-LR)
    regularized_layers: list[str] | None = None
    #: one record per completed epoch (metrics.jsonl)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    #: the best validation score so far, whether the last epoch improved it, and the epochs
    #: since it last did
    best_score: float = -math.inf
    improved: bool = False
    bad_epochs: int = 0
    #: set by a callback to end the run after the current epoch
    stop: bool = False


@dataclass
class Totals:
    """Sums over an epoch's training samples: loss, regularizer terms, correct predictions."""

    loss: float = 0.0
    reg: float = 0.0
    correct: float = 0.0
    seen: float = 0.0

    def add(self, loss: float, reg: float, logits: Tensor | None, y: Tensor) -> None:
        n = len(y)
        self.loss += loss * n
        self.reg += reg * n
        if logits is not None:
            self.correct += float((logits.argmax(dim=1) == y).sum())
        self.seen += n

    def all_reduced(self) -> Totals:
        """Under torchrun: the sums over every rank's samples (not a mean of the ranks' means)."""
        if not distributed.is_distributed():
            return self
        return Totals(*distributed.all_reduce_sum([self.loss, self.reg, self.correct, self.seen]))


class Callback:
    """A hook into the training loop; override the methods you need (each does nothing here).

    With the shared :class:`Run`, the loop calls: :meth:`on_train_start` once; every epoch
    :meth:`on_epoch_start`, then :meth:`on_step_start` and :meth:`on_step_end` around each
    optimizer step, then :meth:`on_epoch_end` with the epoch's metrics record (validation done,
    the record in ``run.metrics``); :meth:`on_train_end` once at the end, with the exception that
    ended the run (None: it completed or stopped early). Callbacks run in list order.
    """

    def on_train_start(self, run: Run) -> None:
        """Before the first epoch (after a resume restored the run).

        Args:
            run: the run's shared state.
        """

    def on_epoch_start(self, run: Run) -> None:
        """Before epoch ``run.epoch``'s randomness is seeded and its data drawn.

        Args:
            run: the run's shared state; ``run.epoch`` is the epoch about to start (1-based).
        """

    def on_step_start(self, run: Run, step: int) -> None:
        """Before the optimizer step ``step`` (1-based within the epoch).

        Args:
            run: the run's shared state.
            step: the step's index within the epoch, from 1.
        """

    def on_step_end(self, run: Run, step: int, totals: Totals) -> None:
        """After the optimizer step ``step``; ``totals`` are the epoch's sums so far.

        Args:
            run: the run's shared state.
            step: the step's index within the epoch, from 1.
            totals: the epoch's sums so far, this step included (this process's samples only).
        """

    def on_epoch_end(self, run: Run, record: dict[str, Any]) -> None:
        """After epoch ``run.epoch``'s validation; set ``run.stop`` to end the run.

        Args:
            run: the run's shared state.
            record: the epoch's metrics record, already appended to ``run.metrics``.
        """

    def on_train_end(self, run: Run, error: BaseException | None) -> None:
        """After the last epoch, or when ``error`` ended the run.

        Args:
            run: the run's shared state.
            error: the exception that ended the run; None when it completed or stopped early.
        """


class Callbacks(Callback):
    """Several callbacks as one, called in order."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks = list(callbacks)

    def on_epoch_start(self, run: Run) -> None:
        for callback in self.callbacks:
            callback.on_epoch_start(run)

    def on_step_start(self, run: Run, step: int) -> None:
        for callback in self.callbacks:
            callback.on_step_start(run, step)

    def on_step_end(self, run: Run, step: int, totals: Totals) -> None:
        for callback in self.callbacks:
            callback.on_step_end(run, step, totals)

    def on_epoch_end(self, run: Run, record: dict[str, Any]) -> None:
        for callback in self.callbacks:
            callback.on_epoch_end(run, record)

    @contextlib.contextmanager
    def running(self, run: Run) -> Iterator[None]:
        """``on_train_start`` on entry, ``on_train_end`` on exit, for each callback that
        started: every one runs; the first failure of a completed run is raised."""
        started: list[Callback] = []
        error: BaseException | None = None
        try:
            for callback in self.callbacks:
                callback.on_train_start(run)
                started.append(callback)
            yield
        except BaseException as e:
            error = e
            raise
        finally:
            failure: BaseException | None = None
            for callback in started:
                try:
                    callback.on_train_end(run, error)
                except BaseException as e:  # the others still end; the first failure is raised
                    failure = failure or e
            if failure is not None and error is None:
                raise failure


def run_epoch(
    run: Run,
    batches: Iterable[tuple[Tensor, Tensor]],
    callbacks: Callback | None = None,
    *,
    example: Tensor | None = None,
) -> Totals:
    """One pass over ``batches``: a training step per batch, in train mode.

    The regularizers are prepared for the model first, on ``example`` (else on the first batch,
    once it is drawn), and the ones that read representations share one probe for the pass. A
    NaN or infinite loss raises :class:`TrainingError` before any update of that step.
    """
    hooks = callbacks or Callback()
    device = model_device(run.net)
    totals = Totals()
    with contextlib.ExitStack() as stack:
        active: tuple[list[Regularizer], LayerProbe | None] | None = None
        if example is not None:
            active = _prepare(run, example.to(device), stack)
        for step, (xb, yb) in enumerate(batches, start=1):
            x = speed.to_channels_last(xb.to(device), run.channels_last)
            y = yb.to(device)
            if active is None:
                active = _prepare(run, x, stack)
            regularizers, probe = active
            hooks.on_step_start(run, step)
            try:
                loss, reg, logits = training_step(
                    run.model, run.objective, regularizers, probe, run.optimizer, x, y,
                    amp=run.amp, scaler=run.scaler,
                )  # fmt: skip
            except NonFiniteLoss as e:
                raise TrainingError(
                    f"the loss became {e.value} at {_where(run, step)}; lower the learning rate "
                    "or check the data"
                ) from None
            if run.scheduler is not None:
                run.scheduler.step()
            totals.add(loss, reg, logits, y)
            hooks.on_step_end(run, step, totals)
    return totals


def _prepare(
    run: Run, example: Tensor, stack: contextlib.ExitStack
) -> tuple[list[Regularizer], LayerProbe | None]:
    """The pass's regularizers (prepared over exact representation names: a module run twice
    per forward is two terms, so the probe captures exactly what each term compares) and their
    probe; the model then goes to train mode."""
    regularizers, layers = prepare_regularizers(run.net, run.regularizers, example)
    run.model.train()
    if layers is None:
        return regularizers, None
    return regularizers, stack.enter_context(LayerProbe(run.net, layers, detach=False))


def _where(run: Run, step: int) -> str:
    where = f"epoch {run.epoch}, step {step}" if run.epoch else f"step {step}"
    if run.out is not None and (run.out / CHECKPOINT_NAME).exists():
        where += f"; the last good checkpoint is in {run.out}"
    return where
