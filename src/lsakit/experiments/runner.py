"""The one grid runner: typed run specs in, cached run records out (``reproduce`` and ``study``).

A grid is a table's rows × seeds. Each (row, seed) is a :class:`RunSpec`: a frozen pydantic model
holding everything that decides the run's numbers (the training config, the evaluation, which
checkpoint is evaluated). A paper reproduction (:mod:`lsakit.experiments.reproduction`) and a
companion-method study (:mod:`lsakit.experiments.studies`) differ only in how they derive their
specs and which report they render; both go through :func:`run_grid`, which keeps the books once:

* **Cache.** A finished run leaves its :class:`RunRecord` as ``run.json`` in its run directory,
  keyed by a hash of the spec's canonical JSON (:func:`run_key`), the keys of the runs it starts
  from, and the numerics mode (:mod:`lsakit.numerics`; absent from the key in the default mode).
  A run whose record has the key asked for is reused, not submitted: an interrupted grid
  continues where it stopped, and a run is reused only under the numerics mode it computed in.
  A run with another key (other settings) is run again into its directory.
* **Order.** A run that needs others (an ``-LR-MVL`` row the Normal run of its seed, a pruned
  study row its source row) gets its spec once they have finished, from their records, and is
  submitted then; nothing else waits.
* **Progress and failures.** Each finished run is logged (``ROW seed S: …``, ``(reused)`` where
  it was) and counted on a progress bar; a run that fails does not stop the others, the runs that
  need it are skipped, and :class:`GridError` names the failed (row, seed) at the end.

Where the runs execute is an :class:`~lsakit.experiments.executors.Executor`'s only concern
(here, a local process pool, a Ray cluster): it submits ``fn(payload, *needed)`` and says when
each has finished. The record is written by the run itself (in the worker, through
:func:`execute_run`), so a run's directory is complete the moment it finishes and its tracked run
(``--log-to``) gets ``run.json`` as an artifact.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import Field, ValidationError
from torch import nn

from lsakit import numerics
from lsakit._frozen import FrozenModel
from lsakit._io import atomic_write_text
from lsakit._progress import Progress
from lsakit.checkpoint import load_checkpoint
from lsakit.config import TrainConfig, validate_config
from lsakit.errors import LsakitError
from lsakit.experiments.config import EvaluatedCheckpoint
from lsakit.experiments.executors import Executor, Result, Session, failure_reason
from lsakit.tracking import TrackingSetup, log_results
from lsakit.train import train

#: The record a finished run leaves in its directory.
RUN_FILE = "run.json"

P = TypeVar("P")
S = TypeVar("S", bound="RunSpec")
Key = tuple[str, int]  # (row, seed)
JobFunction = Callable[..., Result]  # fn(payload, *results of the jobs it needs) -> result


# --------------------------------------------------------------------------------------------
# Specs and records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunContext:
    """Where and how a run executes: nothing here changes its numbers, so none of it is keyed."""

    run_dir: str
    data_dir: str | None
    device: str
    #: the tracking backends (``--log-to``) and names; tracking is no part of what is reused
    log_to: tuple[str, ...] = ()
    tracking: TrackingSetup | None = None


@dataclass(frozen=True)
class RunOutcome:
    """What a spec's :meth:`RunSpec.execute` returns: its result and what is tracked of it."""

    result: FrozenModel
    final_metrics: Mapping[str, float | None]  # logged as the run's final evaluation
    last_epoch: int  # the step the final evaluation is tracked at
    log_to: Sequence[str]  # the backends the run was tracked in


@dataclass(frozen=True)
class Trained:
    """A trained run: its config, the evaluated model and checkpoint, the last epoch."""

    config: TrainConfig
    model: nn.Module
    checkpoint: Path
    last_epoch: int
    regularized_layers: list[str] | None


class RunSpec(FrozenModel, ABC):
    """One (row, seed) run: everything that decides its numbers (its canonical JSON is its key).

    Subclasses add their evaluation settings, name their ``kind``, and implement
    :meth:`execute` (train, then evaluate) and :meth:`summary` (the progress line).
    """

    kind: ClassVar[str]

    row: str
    seed: int
    #: TrainConfig fields of the run (tracking aside: ``log_to`` is the context's)
    train: dict[str, Any]
    #: which checkpoint is evaluated (:data:`~lsakit.experiments.config.EvaluatedCheckpoint`)
    evaluated_checkpoint: EvaluatedCheckpoint

    @abstractmethod
    def execute(self, context: RunContext) -> RunOutcome:
        """Train and evaluate the run in ``context.run_dir`` (in this or a worker process).

        Args:
            context: where and how it runs (directory, data directory, device, tracking).

        Returns:
            Its result (written into ``run.json``) and what is tracked of it.
        """

    @abstractmethod
    def summary(self, result: Mapping[str, Any]) -> str:
        """The progress line's numbers of a finished run (its record's ``result``).

        Args:
            result: the ``result`` of the run's record, as JSON.

        Returns:
            A short line, logged after ``ROW seed S:``.
        """

    def train_and_pick(self, context: RunContext) -> Trained:
        """Train this run (replacing whatever is in its directory) and load the evaluated model.

        Args:
            context: the run directory, data directory, device and tracking of the run; its
                ``log_to`` replaces the training config's.

        Returns:
            The training config, the model of :attr:`evaluated_checkpoint` (``last``: the
            trained model in eval mode; ``best``: ``best.safetensors`` loaded on the CPU, or
            the last where the run kept none), its checkpoint file, the last epoch (0 without
            metrics) and the regularized layers.
        """
        config = validate_config(self.train, source=f"row {self.row}")
        if context.log_to:
            config = config.with_overrides(log_to=list(context.log_to))
        result = train(
            config, Path(context.run_dir), device=context.device, data_dir=context.data_dir,
            overwrite=True, tracking=context.tracking,
        )  # fmt: skip
        assert result.checkpoint is not None  # trained into a directory
        if self.evaluated_checkpoint == "last":
            model, checkpoint = result.model.eval(), result.checkpoint  # as model.safetensors
        else:
            checkpoint = result.best_checkpoint or result.checkpoint
            model, _ = load_checkpoint(checkpoint)
        last_epoch = int(result.metrics[-1]["epoch"]) if result.metrics else 0
        return Trained(config, model, checkpoint, last_epoch, result.regularized_layers)


class RunRecord(FrozenModel):
    """A finished run's ``run.json``: its key, the spec it ran and its result (as JSON: the
    spec's kind reads it back into its own result type)."""

    #: 2 (the two runners' earlier records, without a ``key``, are not reused: run again)
    format: Literal[2] = 2
    kind: str
    key: str
    #: the numerics mode it computed in (lsakit.numerics)
    numerics: str
    #: the keys of the runs it started from (part of its key: a retrained source changes it)
    after: list[str] = Field(default_factory=list)
    spec: dict[str, Any]
    result: dict[str, Any]


def run_key(spec: RunSpec, numerics_mode: str, after: Sequence[str] = ()) -> str:
    """The cache key of ``spec``: a hash of its kind and canonical JSON, the keys of the runs it
    starts from, and the numerics mode (absent in the default mode)."""
    payload: dict[str, Any] = {"kind": spec.kind, "spec": spec.model_dump(mode="json")}
    if after:
        payload["after"] = list(after)
    if numerics_mode != "default":
        payload["numerics"] = numerics_mode
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cached_record(run_dir: Path, key: str) -> RunRecord | None:
    """The record in ``run_dir`` if it has ``key``; None when absent, unreadable or other."""
    try:
        data = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    try:
        return RunRecord.model_validate(data)
    except ValidationError:
        return None


@dataclass(frozen=True)
class Submission:
    """A run sent to an executor: plain data, so it can go to another process or node."""

    spec: RunSpec
    context: RunContext
    key: str
    numerics: str
    after: tuple[str, ...] = ()


def execute_run(submission: Submission, *needed: Result) -> Result:
    """Run one spec (in this or a worker process), write its record, track it: the record's data.

    ``needed``: the records of the runs it needs, unused (their keys are in the submission).
    """
    spec, context = submission.spec, submission.context
    outcome = spec.execute(context)
    record = RunRecord(
        kind=spec.kind, key=submission.key, numerics=submission.numerics,
        after=list(submission.after), spec=spec.model_dump(mode="json"),
        result=outcome.result.model_dump(mode="json"),
    )  # fmt: skip
    path = atomic_write_text(
        Path(context.run_dir) / RUN_FILE,
        json.dumps(record.model_dump(mode="json"), indent=2) + "\n",
    )
    if outcome.log_to:
        log_results(outcome.log_to, context.run_dir, context.tracking, outcome.final_metrics,
                    step=outcome.last_epoch, artifacts=[path])  # fmt: skip
    return record.model_dump(mode="json")


# --------------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridRun(Generic[S]):
    """One (row, seed) of a grid: its spec, or how to derive it from the records of the runs it
    needs (``after``, in that order); where it runs."""

    row: str
    seed: int
    spec: S | Callable[[Sequence[RunRecord]], S]
    context: RunContext
    after: tuple[Key, ...] = ()


@dataclass(frozen=True)
class Finished:
    """A run of the grid: its record, and whether it was reused from an earlier invocation."""

    record: RunRecord
    reused: bool


def run_grid(
    runs: Sequence[GridRun[Any]],
    executor: Executor,
    *,
    out_dir: Path,
    data_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[Key, Finished]:
    """Run every spec of the grid that has no record under its key; ``{(row, seed): Finished}``.

    Raises :class:`GridError` at the end if a run failed (the others are kept and reused next
    time). ``log``: a line per finished run and per failure, and a progress bar.

    Args:
        runs: the grid's (row, seed) runs, each after the runs it needs (ValueError otherwise,
            or for a (row, seed) given twice).
        executor: where the runs execute (local processes, a Ray cluster).
        out_dir: the grid's output folder, given to the executor.
        data_dir: the data directory, given to the executor (None: the default).
        log: where the lines go; None: nowhere, and no progress bar.

    Returns:
        ``{(row, seed): Finished}`` of every run: its record and whether it was reused.
    """
    mode = numerics.current()
    specs: dict[Key, RunSpec] = {}
    reused: set[Key] = set()

    def prepare(job: Job[GridRun[Any]], needed: list[Result]) -> Reuse | Submit:
        run = job.payload
        records = [RunRecord.model_validate(r) for r in needed]
        spec = run.spec(records) if callable(run.spec) else run.spec
        specs[job.key] = spec
        after = tuple(r.key for r in records)
        key = run_key(spec, mode, after)
        record = cached_record(Path(run.context.run_dir), key)
        if record is not None:
            reused.add(job.key)
            return Reuse(record.model_dump(mode="json"))
        return Submit(Submission(spec, run.context, key, mode, after))

    def done(job: Job[Any], result: Result) -> None:
        if log is not None:
            line = specs[job.key].summary(result["result"])
            log(f"  {job}: {line}" + (" (reused)" if job.key in reused else ""))

    jobs = [Job(run.row, run.seed, run, after=run.after) for run in runs]
    results = _Scheduler(executor, execute_run, jobs, out_dir, data_dir, log).run(prepare, done)
    return {
        key: Finished(RunRecord.model_validate(result), key in reused)
        for key, result in results.items()
    }


# --------------------------------------------------------------------------------------------
# Jobs: what the runner schedules
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job(Generic[P]):
    """One (row, seed) of a grid: its payload, and the runs whose results it needs first."""

    row: str
    seed: int
    payload: P
    after: tuple[Key, ...] = ()  # the runs whose results this one needs, in this order

    @property
    def key(self) -> Key:
        return (self.row, self.seed)

    def __str__(self) -> str:
        return f"{self.row} seed {self.seed}"


@dataclass(frozen=True)
class Submit:
    """Submit the job with this payload."""

    payload: Any


@dataclass(frozen=True)
class Reuse:
    """Do not submit the job: this is its result (a finished run found in the cache)."""

    result: Result


class GridError(LsakitError):
    """A run of a grid failed; the runs that finished are kept and reused on the next try.

    Args:
        message: one line: the first failed run and its reason, how many others failed or were
            skipped, and where the finished runs are kept.
        failed: ``((row, seed), reason)`` of every run that failed, in grid order (kept as
            ``failed``).
    """

    def __init__(self, message: str, failed: list[tuple[Key, str]]) -> None:
        super().__init__(message)
        self.failed = failed  # ((row, seed), reason) of every run that failed, in grid order


def run_jobs(
    executor: Executor,
    fn: JobFunction,
    jobs: Sequence[Job[Any]],
    *,
    out_dir: Path,
    data_dir: Path | None = None,
    on_done: Callable[[Job[Any], Result], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[Key, Result]:
    """``{(row, seed): fn(payload, *results of job.after)}`` of every job, or :class:`GridError`
    at the end; the scheduling of :func:`run_grid` without specs and records.

    ``out_dir`` (and ``data_dir``) are where the jobs read and write their files; ``on_done`` is
    called here as each job finishes, in the order they finish. With ``log`` (its lines:
    failures, warnings) the finished jobs are counted on a progress bar.
    """

    def prepare(job: Job[Any], needed: list[Result]) -> Submit:
        return Submit(job.payload)

    return _Scheduler(executor, fn, jobs, out_dir, data_dir, log).run(prepare, on_done)


class _Scheduler:
    """The books of one grid: what is ready, running, finished, failed or skipped."""

    def __init__(
        self,
        executor: Executor,
        fn: JobFunction,
        jobs: Sequence[Job[Any]],
        out_dir: Path,
        data_dir: Path | None,
        log: Callable[[str], None] | None,
    ) -> None:
        seen: set[Key] = set()
        for job in jobs:
            if job.key in seen:
                raise ValueError(f"the grid has {job} twice")
            missing = [k for k in job.after if k not in seen]
            if missing:
                raise ValueError(f"{job} needs {missing}, which do not come before it in the grid")
            seen.add(job.key)
        self.executor, self.fn, self.jobs = executor, fn, list(jobs)
        self.out_dir, self.data_dir, self.log = out_dir, data_dir, log
        self.results: dict[Key, Result] = {}
        self.failed: dict[Key, str] = {}  # key → reason
        self.skipped: set[Key] = set()  # needed a run that failed
        self.first_error: BaseException | None = None

    def run(
        self,
        prepare: Callable[[Job[Any], list[Result]], Submit | Reuse],
        on_done: Callable[[Job[Any], Result], None] | None,
    ) -> dict[Key, Result]:
        say = self.log or (lambda line: None)
        with Progress(self.log is not None) as shown:
            bar = shown.add_task("grid", len(self.jobs), "runs")

            def finish(job: Job[Any], result: Result) -> None:
                self.results[job.key] = result
                if on_done is not None:
                    on_done(job, result)
                shown.advance(bar)

            with self.executor.session(
                self.fn, size=len(self.jobs), out_dir=self.out_dir, data_dir=self.data_dir,
                log=say,
            ) as session:  # fmt: skip
                self._drive(session, prepare, finish)
        if self.failed:
            raise GridError(self._failure_message(), [
                (job.key, self.failed[job.key]) for job in self.jobs if job.key in self.failed
            ]) from self.first_error  # fmt: skip
        return self.results

    def _drive(
        self,
        session: Session,
        prepare: Callable[[Job[Any], list[Result]], Submit | Reuse],
        finish: Callable[[Job[Any], Result], None],
    ) -> None:
        waiting = list(self.jobs)  # grid order: what a job needs comes before it
        tickets = {job.key: i for i, job in enumerate(self.jobs)}
        running: dict[int, Job[Any]] = {}
        while waiting or running:
            for job in list(waiting):
                if session.capacity is not None and len(running) >= session.capacity:
                    break
                if any(k in self.failed or k in self.skipped for k in job.after):
                    waiting.remove(job)
                    self.skipped.add(job.key)
                    continue
                if not all(k in self.results for k in job.after):
                    continue
                waiting.remove(job)
                needed = [self.results[k] for k in job.after]
                try:
                    step = prepare(job, needed)
                    if isinstance(step, Reuse):
                        finish(job, step.result)
                        continue
                    ticket = tickets[job.key]
                    session.submit(ticket, str(job), step.payload, needed)
                except Exception as e:
                    self._fail(job, e)
                    continue
                running[ticket] = job
            if not running:
                break
            for ticket, outcome in sorted(session.wait(), key=lambda done: done[0]):
                job = running.pop(ticket)
                if isinstance(outcome, BaseException):
                    self._fail(job, outcome)
                else:
                    finish(job, outcome)

    def _fail(self, job: Job[Any], error: BaseException) -> None:
        self.failed[job.key] = reason = failure_reason(error)
        self.first_error = self.first_error or error
        if self.log is not None:
            self.log(f"  {job}: failed — {reason}")

    def _failure_message(self) -> str:
        failed = [job for job in self.jobs if job.key in self.failed]
        first = failed[0]
        message = f"run {first} failed: {self.failed[first.key]}"
        if len(failed) > 1:
            others = ", ".join(str(job) for job in failed[1:4]) + (", …" if len(failed) > 4 else "")
            message += f"; {len(failed) - 1} more failed ({others})"
        if self.skipped:
            message += f"; {len(self.skipped)} that need a failed run were not run"
        kept = len(self.results)
        return message + (
            f". {kept} finished run{'s are' if kept != 1 else ' is'} kept in "
            f"{self.out_dir / 'runs'}: fix the problem and run the same command again to continue"
        )
