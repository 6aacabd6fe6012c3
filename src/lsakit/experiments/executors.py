"""Where the runs of a grid execute: here, in local processes, or as tasks on a Ray cluster.

An executor only submits. The runner (:mod:`lsakit.experiments.runner`) keeps the books — which
runs are finished already, which wait for others, what is logged, what failed — and, for each
grid, opens a :class:`Session` of the executor, in which it submits calls
``fn(payload, *needed)`` (a run and the results of the runs it needs) and waits for them to
finish:

* :class:`LocalExecutor` — one after the other in this process (``processes=1``), or in a pool of
  processes.
* :class:`RayExecutor` — every call is one Ray task with ``cpus_per_run`` CPUs and
  ``gpus_per_run`` GPUs.

Results travel back as data (each call returns a small dict); files do not. Every run writes its
directory under the output directory, so with Ray that directory must be one that the driver and
every worker see at the same path: any local path on a one-machine cluster, a shared file system
(NFS, Lustre, …) on several nodes. The driver leaves a marker file there and each task checks it
before running, so a node without the shared mount fails with a clear line instead of training
into a private copy nobody reads.

Every worker (a pool process, a Ray task) computes in the driver's numerics mode
(:mod:`lsakit.numerics`) with the executor's number of torch threads (:func:`_call`).
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from lsakit import numerics
from lsakit.errors import ConfigError, LsakitError

Result = dict[str, Any]
#: What a session answers for a finished call: its ticket, and its result or what it raised.
Done = tuple[int, Result | BaseException]

#: What to install for ``--executor ray``; the one place that names it.
RAY_INSTALL_HINT = "pip install 'lsakit[ray]' (or pip install 'ray>=2.9')"


class Session(ABC):
    """One grid's submissions to an executor (open while the grid runs)."""

    #: how many submitted calls may be unfinished at once (None: any; the executor queues them)
    capacity: int | None = None

    @abstractmethod
    def submit(self, ticket: int, name: str, payload: Any, needed: Sequence[Result]) -> None:
        """Start ``fn(payload, *needed)``; ``ticket`` names it in :meth:`wait`'s answer, ``name``
        (``ROW seed S``) where the executor shows it. Raises if it cannot be submitted."""

    @abstractmethod
    def wait(self) -> list[Done]:
        """Block until a submitted call has finished; every finished one, each once."""


class Executor(ABC):
    """Where a grid's calls run; see the module docstring."""

    @abstractmethod
    def session(
        self,
        fn: Callable[..., Result],
        *,
        size: int,
        out_dir: Path,
        data_dir: Path | None,
        log: Callable[[str], None],
    ) -> contextlib.AbstractContextManager[Session]:
        """A session for one grid of ``size`` runs calling ``fn``; ``out_dir`` (and ``data_dir``)
        are where the runs read and write their files, ``log`` takes warnings. Leaving it
        cancels what still runs (Ctrl-C) and releases what the grid held."""

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


def _call(
    fn: Callable[..., Result],
    threads: int | None,
    numerics_mode: str,
    payload: Any,
    *needed: Result,
) -> Result:
    """Run one call here (in this process, a pool process or a Ray worker), with the driver's
    numerics mode (which a worker started without it refuses, :func:`lsakit.numerics.use`)."""
    numerics.use(numerics_mode)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return fn(payload, *needed)


def failure_reason(error: BaseException) -> str:
    """One line saying why a run failed."""
    if isinstance(error, LsakitError):
        return str(error)
    if isinstance(error, BrokenProcessPool):
        return "a worker process of the pool died (killed, crashed or out of memory)"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''} (--debug shows the traceback)"


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

    @contextlib.contextmanager
    def session(
        self,
        fn: Callable[..., Result],
        *,
        size: int,
        out_dir: Path,
        data_dir: Path | None,
        log: Callable[[str], None],
    ) -> Iterator[Session]:
        if self.processes == 1 or size <= 1:
            yield _InProcess(fn, self.threads)
            return
        with ProcessPoolExecutor(max_workers=self.processes) as pool:
            yield _Pool(pool, fn, self.threads or 1)


class _InProcess(Session):
    """One call at a time, run here when the runner waits for it."""

    capacity = 1

    def __init__(self, fn: Callable[..., Result], threads: int | None) -> None:
        self.fn, self.threads = fn, threads
        self.queued: list[tuple[int, Any, Sequence[Result]]] = []

    def submit(self, ticket: int, name: str, payload: Any, needed: Sequence[Result]) -> None:
        self.queued.append((ticket, payload, needed))

    def wait(self) -> list[Done]:
        ticket, payload, needed = self.queued.pop(0)
        try:
            return [(ticket, _call(self.fn, self.threads, numerics.current(), payload, *needed))]
        except Exception as e:
            return [(ticket, e)]


class _Pool(Session):
    """Every call submitted to the pool at once; the pool queues them."""

    def __init__(self, pool: ProcessPoolExecutor, fn: Callable[..., Result], threads: int) -> None:
        self.pool, self.fn, self.threads = pool, fn, threads
        self.running: dict[Future[Result], int] = {}

    def submit(self, ticket: int, name: str, payload: Any, needed: Sequence[Result]) -> None:
        future = self.pool.submit(
            _call, self.fn, self.threads, numerics.current(), payload, *needed
        )
        self.running[future] = ticket

    def wait(self) -> list[Done]:
        finished, _ = wait(self.running, return_when=FIRST_COMPLETED)
        done: list[Done] = []
        for future in finished:
            ticket = self.running.pop(future)
            try:
                done.append((ticket, future.result()))
            except Exception as e:
                done.append((ticket, e))
        return done


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
            f"{{executor}} ray needs Ray, which is not installed: {RAY_INSTALL_HINT}"
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
            raise ConfigError(f"{{cpus_per_run}} must be > 0, got {cpus_per_run:g}")
        if not gpus_per_run >= 0:
            raise ConfigError(f"{{gpus_per_run}} must be ≥ 0, got {gpus_per_run:g}")
        if max_retries < 0:
            raise ConfigError(f"{{max_retries}} must be ≥ 0, got {max_retries}")
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
            raise ConfigError(f"{{cpus_per_run}}/{{gpus_per_run}}: {e}") from None
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
    @contextlib.contextmanager
    def session(
        self,
        fn: Callable[..., Result],
        *,
        size: int,
        out_dir: Path,
        data_dir: Path | None,
        log: Callable[[str], None],
    ) -> Iterator[Session]:
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
        session = _RaySession(self._task, self._resources, fn, setup)
        try:
            yield session
        finally:
            for ref in session.pending:  # interrupted (Ctrl-C): do not leave the rest running
                ray.cancel(ref)
            marker.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # another driver's marker is still there
                marker.parent.rmdir()

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


class _RaySession(Session):
    """Every call is submitted as a Ray task at once; Ray queues them by their resources."""

    def __init__(
        self, task: Any, resources: dict[str, Any], fn: Callable[..., Result], setup: _WorkerSetup
    ) -> None:
        self.task, self.resources, self.fn, self.setup = task, resources, fn, setup
        # workers of their own that import lsakit with the driver's numerics mode: a worker that
        # has computed under another one cannot switch (lsakit.numerics)
        self.runtime_env = {"env_vars": {numerics.ENV_VAR: setup.numerics}}
        self.pending: dict[Any, int] = {}  # ObjectRef → ticket

    def submit(self, ticket: int, name: str, payload: Any, needed: Sequence[Result]) -> None:
        ref = self.task.options(
            name=f"lsakit {name}", runtime_env=self.runtime_env, **self.resources
        ).remote(self.fn, self.setup, payload, *needed)
        self.pending[ref] = ticket

    def wait(self) -> list[Done]:
        ray = _ray()

        # ray.wait keeps the order of its input among the ready ones: submission order
        ready, _ = ray.wait(list(self.pending), num_returns=1)
        ticket = self.pending.pop(ready[0])
        try:
            return [(ticket, ray.get(ready[0]))]
        except Exception as e:
            return [(ticket, _ray_cause(e))]


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


def _call_on_worker(
    fn: Callable[..., Result], setup: _WorkerSetup, payload: Any, *needed: Result
) -> Result:
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
