"""Where the runs of a grid execute: here, in local processes, or as tasks on a Ray cluster.

A grid (a reproduction's or a study's rows × seeds) is a list of :class:`Job` s, one per
(row, seed) run, each naming the runs it needs first (``after``: the Normal run of its seed for an
``-LR-MVL`` row, the source row for a pruned one). Both runners hand the same job function to an
:class:`Executor`, which calls ``fn(job.payload, *results of job.after)`` for every job:

* :class:`LocalExecutor` — one after the other in this process (``processes=1``), or in a pool of
  processes; a job is submitted once the jobs it needs have finished.
* :class:`RayExecutor` — every job is one Ray task with ``cpus_per_run`` CPUs and
  ``gpus_per_run`` GPUs. A job that needs another gets that task's ``ObjectRef`` as an argument,
  so Ray starts it when the other has finished, and nothing else of the grid waits.

Results travel back as data (each job returns a small dict); files do not. Every run writes its
directory under the output directory, so with Ray that directory must be one that the driver and
every worker see at the same path: any local path on a one-machine cluster, a shared file system
(NFS, Lustre, …) on several nodes. The driver leaves a marker file there and each task checks it
before running, so a node without the shared mount fails with a clear line instead of training
into a private copy nobody reads.

A job that fails does not stop the others: the runs that do not need it go on and are kept
(``run.json``), the runs that need it are skipped, and :class:`GridError` names the failed
(row, seed) at the end. Running the same command again reuses every finished run.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

from lsakit import numerics
from lsakit._progress import Progress
from lsakit.errors import ConfigError, LsakitError

P = TypeVar("P")
Key = tuple[str, int]  # (row, seed)
Result = dict[str, Any]
JobFunction = Callable[..., Result]  # fn(payload, *results of the jobs it needs) -> result

#: What to install for ``--executor ray``; the one place that names it.
RAY_INSTALL_HINT = "pip install 'lsakit[ray]' (or pip install 'ray>=2.9')"


@dataclass(frozen=True)
class Job(Generic[P]):
    """One (row, seed) run: plain data, so it can go to another process or node."""

    row: str
    seed: int
    payload: P
    after: tuple[Key, ...] = ()  # the runs whose results this one needs, in this order

    @property
    def key(self) -> Key:
        return (self.row, self.seed)

    def __str__(self) -> str:
        return f"{self.row} seed {self.seed}"


class GridError(LsakitError):
    """A run of a grid failed; the runs that finished are kept and reused on the next try."""

    def __init__(self, message: str, failed: list[tuple[Key, str]]) -> None:
        super().__init__(message)
        self.failed = failed  # ((row, seed), reason) of every run that failed, in grid order


@dataclass
class _Outcome:
    results: dict[Key, Result] = field(default_factory=dict)
    failed: dict[Key, str] = field(default_factory=dict)  # key → reason
    skipped: set[Key] = field(default_factory=set)  # needed a run that failed
    first_error: BaseException | None = None

    def blocked(self, job: Job[Any]) -> bool:
        """Whether a run this job needs failed (or was itself skipped)."""
        return any(k in self.failed or k in self.skipped for k in job.after)

    def settle(self, jobs: Sequence[Job[Any]]) -> None:
        """A "failure" of a job whose needed run failed is that run's, passed on: a skip."""
        for job in jobs:  # grid order: what a job needs comes before it
            if job.key in self.failed and self.blocked(job):
                del self.failed[job.key]
                self.skipped.add(job.key)


class Executor(ABC):
    """Runs the jobs of a grid, each after the jobs it needs; see the module docstring."""

    def run(
        self,
        fn: JobFunction,
        jobs: Sequence[Job[Any]],
        *,
        out_dir: Path,
        data_dir: Path | None = None,
        on_done: Callable[[Job[Any], Result], None] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> dict[Key, Result]:
        """``{(row, seed): fn(payload, *needed)}`` of every job, or :class:`GridError` at the end.

        ``out_dir`` (and ``data_dir``) are where the runs read and write their files; ``on_done``
        is called in this process as each run finishes, in the order they finish. With ``log``
        (its lines: failures, warnings), the finished runs are counted on a progress bar (plain
        lines where stdout is not a terminal, :mod:`lsakit._progress`).
        """
        _check_order(jobs)
        with Progress(log is not None) as shown:
            task = shown.add_task("grid", len(jobs), "runs")

            def finished(job: Job[Any], result: Result) -> None:
                if on_done is not None:
                    on_done(job, result)
                shown.advance(task)

            outcome = self._execute(
                fn, jobs, out_dir=out_dir, data_dir=data_dir, on_done=finished,
                log=log or (lambda line: None),
            )  # fmt: skip
        outcome.settle(jobs)
        if outcome.failed:
            raise GridError(_failure_message(jobs, outcome, out_dir), [
                (job.key, outcome.failed[job.key]) for job in jobs if job.key in outcome.failed
            ]) from outcome.first_error  # fmt: skip
        return outcome.results

    @abstractmethod
    def _execute(
        self,
        fn: JobFunction,
        jobs: Sequence[Job[Any]],
        *,
        out_dir: Path,
        data_dir: Path | None,
        on_done: Callable[[Job[Any], Result], None],
        log: Callable[[str], None],
    ) -> _Outcome: ...

    def close(self) -> None:  # noqa: B027 (nothing to release by default)
        """Release what the executor holds (a Ray connection it made); it can be used again."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def _check_order(jobs: Sequence[Job[Any]]) -> None:
    seen: set[Key] = set()
    for job in jobs:
        if job.key in seen:
            raise ValueError(f"the grid has {job} twice")
        missing = [k for k in job.after if k not in seen]
        if missing:
            raise ValueError(f"{job} needs {missing}, which do not come before it in the grid")
        seen.add(job.key)


def _call(
    fn: JobFunction, threads: int | None, numerics_mode: str, payload: Any, *needed: Result
) -> Result:
    """Run one job here (in this process, a pool process or a Ray worker), with the driver's
    numerics mode (which a worker started without it refuses, :func:`lsakit.numerics.use`)."""
    numerics.use(numerics_mode)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return fn(payload, *needed)


def _reason(error: BaseException) -> str:
    """One line saying why a run failed."""
    if isinstance(error, LsakitError):
        return str(error)
    if isinstance(error, BrokenProcessPool):
        return "a worker process of the pool died (killed, crashed or out of memory)"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''} (--debug shows the traceback)"


def _failure_message(jobs: Sequence[Job[Any]], outcome: _Outcome, out_dir: Path) -> str:
    failed = [job for job in jobs if job.key in outcome.failed]
    first = failed[0]
    message = f"run {first} failed: {outcome.failed[first.key]}"
    if len(failed) > 1:
        others = ", ".join(str(job) for job in failed[1:4]) + (", …" if len(failed) > 4 else "")
        message += f"; {len(failed) - 1} more failed ({others})"
    if outcome.skipped:
        message += f"; {len(outcome.skipped)} that need a failed run were not run"
    kept = len(outcome.results)
    message += (
        f". {kept} finished run{'s are' if kept != 1 else ' is'} kept in {out_dir / 'runs'}: "
        "fix the problem and run the same command again to continue"
    )
    return message


# --------------------------------------------------------------------------------------------
# This machine
# --------------------------------------------------------------------------------------------


class LocalExecutor(Executor):
    """Runs in this process (``processes=1``) or in a pool of ``processes`` processes.

    ``threads``: torch threads of each run (``None``: leave this process's setting; a pool's
    processes then use 1, since several processes with one thread per core each oversubscribe
    the CPU and make small models many times slower).
    """

    def __init__(self, processes: int = 1, *, threads: int | None = None) -> None:
        if processes < 1:
            raise ConfigError(f"jobs must be at least 1, got {processes}")
        self.processes = processes
        self.threads = threads

    def _execute(
        self,
        fn: JobFunction,
        jobs: Sequence[Job[Any]],
        *,
        out_dir: Path,
        data_dir: Path | None,
        on_done: Callable[[Job[Any], Result], None],
        log: Callable[[str], None],
    ) -> _Outcome:
        outcome = _Outcome()
        if self.processes == 1 or len(jobs) <= 1:
            for job in jobs:
                if outcome.blocked(job):
                    outcome.skipped.add(job.key)
                    continue
                try:
                    needed = [outcome.results[k] for k in job.after]
                    result = _call(fn, self.threads, numerics.current(), job.payload, *needed)
                except Exception as e:
                    _record_failure(outcome, job, e, log)
                    continue
                outcome.results[job.key] = result
                on_done(job, result)
            return outcome
        threads = self.threads or 1
        waiting = list(jobs)
        running: dict[Future[Result], Job[Any]] = {}
        with ProcessPoolExecutor(max_workers=self.processes) as pool:
            while waiting or running:
                for job in list(waiting):
                    if outcome.blocked(job):
                        waiting.remove(job)
                        outcome.skipped.add(job.key)
                    elif all(k in outcome.results for k in job.after):
                        waiting.remove(job)
                        needed = [outcome.results[k] for k in job.after]
                        try:
                            future = pool.submit(
                                _call, fn, threads, numerics.current(), job.payload, *needed
                            )
                        except BrokenProcessPool as e:
                            _record_failure(outcome, job, e, log)
                            continue
                        running[future] = job
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: jobs.index(running[f])):
                    job = running.pop(future)
                    try:
                        result = future.result()
                    except Exception as e:
                        _record_failure(outcome, job, e, log)
                        continue
                    outcome.results[job.key] = result
                    on_done(job, result)
        return outcome


def _record_failure(
    outcome: _Outcome, job: Job[Any], error: BaseException, log: Callable[[str], None] | None
) -> None:
    outcome.failed[job.key] = reason = _reason(error)
    outcome.first_error = outcome.first_error or error
    if log is not None:
        log(f"  {job}: failed — {reason}")


# --------------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------------

MARKER_FOLDER = ".lsakit-drivers"


def _ray() -> Any:
    """The ``ray`` module (untyped), or the one line that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            f"--executor ray needs Ray, which is not installed: {RAY_INSTALL_HINT}"
        ) from None
    return ray


class RayExecutor(Executor):
    """Every run is one Ray task with ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs.

    ``address``: the cluster, as ``ray.init`` takes it (``HOST:PORT`` of the head, ``auto``,
    ``ray://HOST:10001``); ``None``: ``$RAY_ADDRESS``, else a cluster started with ``ray start`` on
    this machine, else a new local one (Ray's own rule). A connection this executor makes is
    closed by :meth:`close`; one that exists already (``ray.init`` called before) is used as is.

    ``max_retries``: how often Ray runs a task again when its worker or node dies (Ray's default
    is 3); a run's own error is never retried. Each run uses ``max(1, floor(cpus_per_run))``
    torch threads; with ``gpus_per_run`` > 0 Ray hands the task its GPUs (``CUDA_VISIBLE_DEVICES``)
    and ``device="auto"`` picks them.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        cpus_per_run: float = 1,
        gpus_per_run: float = 0,
        max_retries: int = 3,
    ) -> None:
        ray = _ray()
        if not cpus_per_run > 0:
            raise ConfigError(f"--cpus-per-run must be > 0, got {cpus_per_run:g}")
        if not gpus_per_run >= 0:
            raise ConfigError(f"--gpus-per-run must be ≥ 0, got {gpus_per_run:g}")
        if max_retries < 0:
            raise ConfigError(f"--max-retries must be ≥ 0, got {max_retries}")
        self.address = address
        self.cpus_per_run = cpus_per_run
        self.gpus_per_run = gpus_per_run
        self.max_retries = max_retries
        self.threads = max(1, math.floor(cpus_per_run))
        self._task = ray.remote(_call_on_worker)
        self._resources = {"num_cpus": cpus_per_run, "num_gpus": gpus_per_run,
                           "max_retries": max_retries}  # fmt: skip
        try:  # Ray's own checks of the quantities (e.g. whole numbers above 1)
            self._task.options(**self._resources)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"--cpus-per-run/--gpus-per-run: {e}") from None
        self._connected_here = False

    # -- the connection ------------------------------------------------------------------------
    def _connect(self, log: Callable[[str], None]) -> None:
        import logging

        ray = _ray()

        if ray.is_initialized():
            return
        where = self.address or "$RAY_ADDRESS / this machine"
        try:
            ray.init(address=self.address, logging_level=logging.WARNING)
        except Exception as e:
            text = (str(e).strip().splitlines() or [type(e).__name__])[0]
            cause = e.__cause__
            hint = ""
            if "auth" in f"{text} {cause}".lower():
                hint = (
                    "; the cluster wants its token: set RAY_AUTH_MODE=token and the token "
                    "($RAY_AUTH_TOKEN or ~/.ray/auth_token), see "
                    "https://docs.ray.io/en/latest/ray-security/token-auth.html"
                )
            raise ConfigError(
                f"cannot connect to the Ray cluster at {where}: {text}{hint} (check --address: "
                "`ray status` on the head node prints it)"
            ) from None
        self._connected_here = True
        log(f"Ray cluster: {_describe(ray.cluster_resources())}")

    def close(self) -> None:
        if self._connected_here:
            ray = _ray()

            ray.shutdown()
            self._connected_here = False

    def one_machine(self) -> bool:
        """Whether every node of the (connected) cluster is this machine."""
        ray = _ray()

        if self.address is not None and self.address.startswith("ray://"):
            return False  # Ray Client: the tasks run where the cluster is, never here
        nodes = [n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")]
        return is_one_machine(nodes, _local_addresses(ray.util.get_node_ip_address()))

    # -- the grid ------------------------------------------------------------------------------
    def _execute(
        self,
        fn: JobFunction,
        jobs: Sequence[Job[Any]],
        *,
        out_dir: Path,
        data_dir: Path | None,
        on_done: Callable[[Job[Any], Result], None],
        log: Callable[[str], None],
    ) -> _Outcome:
        ray = _ray()

        self._connect(log)
        relative = check_paths_visible(self.one_machine(), out_dir, data_dir)
        self._warn_if_no_node_fits(log)
        marker = _write_marker(out_dir)
        setup = _WorkerSetup(
            marker=str(marker),
            # a relative path means this machine only: the tasks run in this process's directory
            cwd=os.getcwd() if relative else None,
            threads=self.threads,
            numerics=numerics.current(),
            # Ray leaves every GPU visible to a task that asked for none: hide them, so that
            # device "auto" does not put a CPU run on a GPU that another run holds
            hide_gpus=self.gpus_per_run == 0,
        )
        # workers of their own that import lsakit with the driver's numerics mode: a worker that
        # has computed under another one cannot switch (lsakit.numerics)
        runtime_env = {"env_vars": {numerics.ENV_VAR: setup.numerics}}
        refs: dict[Key, Any] = {}
        pending: dict[Any, Job[Any]] = {}
        outcome = _Outcome()
        try:
            for job in jobs:
                ref = self._task.options(
                    name=f"lsakit {job}", runtime_env=runtime_env, **self._resources
                ).remote(fn, setup, job.payload, *[refs[k] for k in job.after])
                refs[job.key] = ref
                pending[ref] = job
            while pending:
                # ray.wait keeps the order of its input among the ready ones: grid order
                ready, _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except Exception as e:
                    # Ray passes a needed run's failure on to the runs that need it: settle()
                    # turns those into skips, and they are not worth a line here.
                    _record_failure(
                        outcome, job, _ray_cause(e), None if outcome.blocked(job) else log
                    )
                    continue
                outcome.results[job.key] = result
                on_done(job, result)
        finally:
            for ref in pending:  # interrupted (Ctrl-C): do not leave the rest running
                ray.cancel(ref)
            marker.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # another driver's marker is still there
                marker.parent.rmdir()
        return outcome

    def _warn_if_no_node_fits(self, log: Callable[[str], None]) -> None:
        ray = _ray()

        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if not any(
            r.get("CPU", 0) >= self.cpus_per_run and r.get("GPU", 0) >= self.gpus_per_run
            for r in nodes
        ):
            log(
                f"warning: no node of the Ray cluster has {self.cpus_per_run:g} CPUs and "
                f"{self.gpus_per_run:g} GPUs for a run (the cluster: "
                f"{_describe(ray.cluster_resources())}); the runs wait until such a node joins "
                "(autoscaling), Ctrl-C to stop"
            )


def check_paths_visible(one_machine: bool, out_dir: Path, data_dir: Path | None) -> bool:
    """Refuse relative paths where workers run on other machines; say whether any is relative.

    On one machine a relative path is fine (the tasks run in the driver's directory); elsewhere
    it would name a different folder on every node.
    """
    relative = [
        (option, path)
        for option, path in (("--out", out_dir), ("--data-dir", data_dir))
        if path is not None and not path.is_absolute()
    ]
    if relative and not one_machine:
        option, path = relative[0]
        raise ConfigError(
            f"{option} {path} is relative, and the Ray workers on other machines cannot see it: "
            f"give an absolute path on a file system that every node mounts at the same place, "
            f"e.g. {option} /shared/{path}"
        )
    return bool(relative)


def is_one_machine(node_addresses: list[str], here: set[str]) -> bool:
    """Whether every node address is one of this machine's addresses (``here``)."""
    return bool(node_addresses) and all(a in here for a in node_addresses)


def _local_addresses(node_ip: str) -> set[str]:
    here = {node_ip, "127.0.0.1", "localhost", socket.gethostname()}
    with contextlib.suppress(OSError):
        here |= set(socket.gethostbyname_ex(socket.gethostname())[2])
    return here


def _describe(resources: dict[str, float]) -> str:
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    return f"{cpus:g} CPUs, {gpus:g} GPUs"


def _write_marker(out_dir: Path) -> Path:
    """A file only this driver writes: a task that does not see it does not see ``out_dir``."""
    folder = out_dir.resolve() / MARKER_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    marker.write_text("this driver's runs may write here\n", encoding="utf-8")
    return marker


@dataclass(frozen=True)
class _WorkerSetup:
    """What a Ray task sets up before its job: the same for every run of a grid."""

    marker: str  # the driver's marker file in the output directory
    cwd: str | None  # the driver's directory, where paths are relative (one machine)
    threads: int
    numerics: str  # the driver's numerics mode
    hide_gpus: bool


def _call_on_worker(fn: JobFunction, setup: _WorkerSetup, payload: Any, *needed: Result) -> Result:
    """A Ray task: check that this node sees the output directory, then run the job."""
    if not Path(setup.marker).is_file():
        out = Path(setup.marker).parent.parent
        raise ConfigError(
            f"node {socket.gethostname()} does not see the output directory {out} (no marker of "
            "the driver there): --out must be on a file system that every Ray node mounts at "
            "the same path"
        )
    if setup.cwd is not None:
        os.chdir(setup.cwd)
    if setup.hide_gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    return _call(fn, setup.threads, setup.numerics, payload, *needed)


def _ray_cause(error: BaseException) -> BaseException:
    """The run's own exception inside a RayTaskError; a readable one for Ray's own failures."""
    rx = _ray().exceptions

    if isinstance(error, rx.RayTaskError):
        cause = error.cause
        return cause if isinstance(cause, BaseException) else error
    if isinstance(error, rx.OutOfMemoryError):
        return _RayFailure(
            "Ray killed its worker for lack of memory (fewer runs per node: raise --cpus-per-run)"
        )
    if isinstance(error, rx.WorkerCrashedError):
        return _RayFailure("its Ray worker process died (killed, crashed or out of memory)")
    if isinstance(error, rx.NodeDiedError):
        return _RayFailure("its Ray node died")
    if isinstance(error, rx.TaskCancelledError):
        return _RayFailure("it was cancelled")
    if isinstance(error, rx.RayError):
        text = str(error).strip().splitlines()
        return _RayFailure(f"Ray: {text[0] if text else type(error).__name__}")
    return error


class _RayFailure(LsakitError):
    """Ray could not finish a task (not the run's own error)."""
