"""Experiment tracking: a run's config, per-epoch metrics and files in TensorBoard and/or MLflow.

The trainer writes ``metrics.jsonl`` and, for every backend in ``TrainConfig.log_to``, the same
records through a :class:`Tracker`: scalars keyed as in ``metrics.jsonl`` with the epoch as the
step, the config as parameters (MLflow) or hparams plus a ``config`` text (TensorBoard), and at the
end the run's files as MLflow artifacts. Both are local by default:

* TensorBoard: event files in ``RUN_DIR/tb`` (``tensorboard --logdir`` on a parent folder shows
  every run below it);
* MLflow: the SQLite database ``RUN_DIR/../mlflow.db`` (the backend MLflow 3 recommends; MLflow's
  client and ``mlflow ui --backend-store-uri sqlite:///…/mlflow.db`` open it as it is), the runs'
  artifacts in ``mlartifacts`` beside it, experiment ``lsakit`` (reproductions and studies:
  ``OUT/mlflow.db`` and ``OUT/mlartifacts``, experiment named after the reproduction or study);
  ``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_NAME`` point elsewhere. An experiment that lsakit
  creates in any SQLite store keeps its artifacts in ``mlartifacts`` beside the database (MLflow's
  own default, ``./mlruns`` of whichever folder the process runs in, is not a place anyone would
  look). The first opening of a SQLite database creates MLflow's tables (a few seconds); lsakit
  opens one under an exclusive lock on its folder, as parallel runs creating them at once fail.

MLflow's file store (``MLFLOW_TRACKING_URI=file:…`` or a plain path, lsakit's default before) is in
maintenance mode since MLflow 3, whose client and UI refuse it unless ``MLFLOW_ALLOW_FILE_STORE``
is true. lsakit never turns that on by itself: a file store is used exactly when MLflow allows it
(MLflow 2, or the user set ``MLFLOW_ALLOW_FILE_STORE=true``, as their own client and UI also need);
otherwise a :class:`TrackingError` says so before training, with the fix. That holds too for
resuming a run that an earlier lsakit tracked in ``mlruns``.

A resumed run continues the same tracked run: the MLflow tracking URI and run id are kept in
``RUN_DIR/mlflow-run.json``; TensorBoard appends to ``RUN_DIR/tb`` with ``purge_step`` just after
the last completed epoch, so the steps continue and events of an epoch that did not complete are
dropped. Only the main process (rank 0 under torchrun) tracks. The packages are optional
(``pip install 'lsakit[tracking]'``: tensorboard; mlflow-skinny with sqlalchemy and alembic for
the SQLite store); asking for a missing one is a :class:`TrackingError`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol

from lsakit._io import atomic_write_text
from lsakit.config.defaults import TrackingBackend as Backend
from lsakit.errors import LsakitError

BACKENDS: tuple[Backend, ...] = ("tensorboard", "mlflow")
Status = Literal["FINISHED", "FAILED", "KILLED"]

TENSORBOARD_DIR = "tb"
MLFLOW_RUN_FILE = "mlflow-run.json"
#: the default MLflow store: this SQLite database in the store folder, artifacts beside it
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlartifacts"
DEFAULT_EXPERIMENT = "lsakit"
#: The per-epoch metrics shown against the hparams in TensorBoard's HPARAMS tab.
HPARAM_METRICS = ("train_loss", "train_accuracy", "val_clean", "val_robust", "test_accuracy")
#: MLflow's limit on a parameter value (2.x; 3.x allows more): longer values are cut.
_MAX_PARAM = 6000

_PACKAGES: dict[str, tuple[str, str]] = {
    # backend: (module that must import, what to install)
    "tensorboard": ("tensorboard", "pip install 'lsakit[tensorboard]' (or tensorboard)"),
    "mlflow": ("mlflow", "pip install 'lsakit[mlflow]' (or mlflow)"),
}
#: what MLflow's SQLite store needs beyond mlflow-skinny (the full mlflow package has them)
_SQL_PACKAGES = ("sqlalchemy", "alembic")
#: tracking URIs that name a store by a word, not a scheme
_NAMED_STORES = frozenset({"databricks", "databricks-uc", "uc"})


class TrackingError(LsakitError):
    """A tracking backend that cannot be used (package missing, store unreachable)."""


@dataclass(frozen=True)
class TrackingSetup:
    """Where and under which names a run is tracked (the directory-independent part).

    ``store`` is the folder of the MLflow store used when ``MLFLOW_TRACKING_URI`` is not set: the
    SQLite database ``store/mlflow.db``, artifacts in ``store/mlartifacts`` (default: the run
    directory's parent); ``experiment`` the MLflow experiment when ``MLFLOW_EXPERIMENT_NAME`` is
    not set; ``run_name`` defaults to the run directory's name.
    """

    experiment: str = DEFAULT_EXPERIMENT
    run_name: str | None = None
    store: Path | None = None
    tags: dict[str, str] = field(default_factory=dict)


class Tracker(Protocol):
    """One tracking backend's view of one run."""

    #: whether this continues a run tracked before (resume), so its params and past epochs are
    #: there already
    continued: bool
    #: where the run goes, in words (for the log)
    where: str

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log the numeric entries of ``metrics`` (None and other values are skipped)."""
        ...

    def log_artifacts(self, paths: Iterable[Path]) -> None: ...

    def close(self, status: Status = "FINISHED") -> None: ...


def require(backends: Iterable[str]) -> None:
    """Raise a one-line :class:`TrackingError` naming what to install for a missing backend, or
    what to change for an MLflow store that this process cannot use (``MLFLOW_TRACKING_URI``, else
    the default SQLite one; see :func:`_check_store`)."""
    for backend in backends:
        if backend not in _PACKAGES:
            raise TrackingError(
                f"unknown tracking backend {backend!r}; use {' or '.join(BACKENDS)}"
            )
        module, install = _PACKAGES[backend]
        if _missing([module]):
            raise TrackingError(
                f"{{log_to}} {backend} needs the {module} package, which is not installed: "
                f"{install}"
            )
        if backend == "mlflow":
            _check_store(os.environ.get("MLFLOW_TRACKING_URI") or None)


def _missing(modules: Iterable[str]) -> list[str]:
    """The ``modules`` that do not import."""
    missing = []
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    return missing


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The entries of ``metrics`` that are numbers (bools excluded), as floats."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def flat_params(config: Mapping[str, Any]) -> dict[str, str | float | int]:
    """A config as flat parameters: numbers kept, everything else as its JSON text."""
    params: dict[str, str | float | int] = {}
    for key, value in config.items():
        if isinstance(value, str) or (
            isinstance(value, int | float) and not isinstance(value, bool)
        ):
            params[key] = value
        else:
            params[key] = json.dumps(value, sort_keys=True, default=str)
    return params


class Trackers:
    """All trackers of one run as one (none at all is fine); a context manager that closes them,
    with status FAILED on an exception and KILLED on Ctrl-C."""

    def __init__(self, trackers: list[Tracker] | None = None) -> None:
        self.trackers = list(trackers or [])

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def describe(self) -> str:
        """One line: where each tracker logs to."""
        return "tracking: " + "; ".join(t.where for t in self.trackers)

    def start(self, params: Mapping[str, Any], records: Iterable[Mapping[str, Any]] = ()) -> None:
        """Give every tracker that starts a new run the params and the epochs done so far (a
        resume whose tracked run is gone gets the past epochs from ``metrics.jsonl``)."""
        done = list(records)
        for tracker in self.trackers:
            if not tracker.continued:
                tracker.log_params(params)
                for record in done:
                    tracker.log_metrics(record, step=int(record["epoch"]))

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        for tracker in self.trackers:
            tracker.log_metrics(metrics, step)

    def log_artifacts(self, paths: Iterable[Path]) -> None:
        existing = [p for p in paths if p.is_file()]
        for tracker in self.trackers:
            tracker.log_artifacts(existing)

    def close(self, status: Status = "FINISHED") -> None:
        for tracker in self.trackers:
            tracker.close(status)
        self.trackers = []

    def __enter__(self) -> Trackers:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close("FINISHED")
        else:
            self.close("KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")


def open_trackers(
    backends: Iterable[str],
    run_dir: str | os.PathLike[str] | None,
    setup: TrackingSetup | None = None,
    *,
    after_step: int | None = None,
    enabled: bool = True,
) -> Trackers:
    """The trackers of the run in ``run_dir`` for ``backends``.

    ``after_step`` None starts a new tracked run (TensorBoard event files of an earlier run in
    ``run_dir/tb`` are deleted; MLflow creates a run and records its id in ``run_dir``); an int
    continues the run tracked in ``run_dir`` after that step (resume, or adding the final results
    of a finished run). ``enabled`` False (ranks other than 0) gives no trackers.
    """
    chosen = list(dict.fromkeys(backends))
    if not enabled or not chosen:
        return Trackers()
    if run_dir is None:
        raise TrackingError("tracking needs the run directory: give {out}")
    require(chosen)
    directory = Path(run_dir)
    setup = setup or TrackingSetup()
    trackers: list[Tracker] = []
    try:
        for backend in chosen:
            if backend == "tensorboard":
                trackers.append(TensorBoardTracker(directory / TENSORBOARD_DIR, after_step))
            else:
                trackers.append(MlflowTracker(directory, setup, resume=after_step is not None))
    except BaseException:
        Trackers(trackers).close("FAILED")
        raise
    return Trackers(trackers)


def log_results(
    backends: Iterable[str],
    run_dir: str | os.PathLike[str],
    setup: TrackingSetup | None,
    results: Mapping[str, Any],
    *,
    step: int,
    artifacts: Iterable[Path] = (),
) -> None:
    """Add a finished run's final results (its evaluation) and files to its tracked run, at
    ``step`` (the last epoch). Nothing happens for no backends."""
    with open_trackers(backends, run_dir, setup, after_step=step) as trackers:
        trackers.log_metrics(results, step)
        trackers.log_artifacts(artifacts)


# --------------------------------------------------------------------------------------------
# TensorBoard
# --------------------------------------------------------------------------------------------
class TensorBoardTracker:
    """Scalars (tag = the metrics.jsonl key, step = epoch), hparams and the config as text, in
    ``log_dir`` through :class:`torch.utils.tensorboard.SummaryWriter`."""

    def __init__(self, log_dir: Path, after_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        old = sorted(log_dir.glob("events.out.tfevents.*")) if log_dir.is_dir() else []
        if after_step is None:
            for path in old:  # a new run in this directory: nothing of an earlier one stays
                path.unlink()
        self.continued = after_step is not None and bool(old)
        # purge_step: on reading, events at steps > after_step from earlier files are dropped
        # (an epoch that was logged but not saved before a kill is trained and logged again).
        purge = after_step + 1 if after_step is not None and old else None
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge)
        self.where = f"TensorBoard {log_dir}" + (" (continued)" if self.continued else "")

    def log_params(self, params: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        values = {
            k: v if isinstance(v, int | float) else str(v) for k, v in flat_params(params).items()
        }
        metrics = {k: 0.0 for k in HPARAM_METRICS}
        experiment, start, end = hparams(values, metrics)  # type: ignore[no-untyped-call]
        writer = self.writer.file_writer
        assert writer is not None
        for summary in (experiment, start, end):
            writer.add_summary(summary)
        text = "\n".join(f"    {k}: {v}" for k, v in flat_params(params).items())
        self.writer.add_text("config", text, global_step=0)
        self.writer.flush()

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        for key, value in numeric(metrics).items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def log_artifacts(self, paths: Iterable[Path]) -> None:
        """TensorBoard keeps no files; the run directory beside ``tb`` holds them."""

    def close(self, status: Status = "FINISHED") -> None:
        self.writer.close()


# --------------------------------------------------------------------------------------------
# MLflow
# --------------------------------------------------------------------------------------------
def mlflow_tracking_uri(run_dir: Path, setup: TrackingSetup) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the SQLite database ``mlflow.db`` in ``setup.store``
    (default: the run directory's parent) as a ``sqlite:///`` URI."""
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if configured:
        return configured
    folder = setup.store if setup.store is not None else run_dir.parent
    return sqlite_uri(folder / MLFLOW_DB)


def sqlite_uri(database: Path) -> str:
    """The MLflow tracking URI of the SQLite database file ``database`` (absolute)."""
    from sqlalchemy.engine import URL

    # SQLAlchemy's URL escapes what its own parser would read otherwise (2.1 URL-decodes paths).
    return URL.create("sqlite", database=database.resolve().as_posix()).render_as_string()


def _scheme(uri: str) -> str:
    """The scheme of a tracking URI without a driver (``sqlite+pysqlite`` → ``sqlite``)."""
    return urllib.parse.urlparse(uri).scheme.lower().split("+")[0]


def _sqlite_database(uri: str) -> Path | None:
    """The database file of a SQLite tracking URI (None for other stores and in-memory ones)."""
    if _scheme(uri) != "sqlite":
        return None
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    return Path(database).resolve() if database and database != ":memory:" else None


def _check_store(uri: str | None, run_file: Path | None = None) -> None:
    """Raise a one-line :class:`TrackingError` when this process cannot use the MLflow store
    ``uri`` (None: the default SQLite database; ``run_file``: the ``mlflow-run.json`` it comes
    from, on a resume): a SQLite store without sqlalchemy and alembic, or a file store that MLflow
    refuses (MLflow ≥ 3 unless ``MLFLOW_ALLOW_FILE_STORE`` is true; lsakit never sets it)."""
    if uri is None or _scheme(uri) == "sqlite":
        missing = _missing(_SQL_PACKAGES)
        if missing:
            names = " and ".join(missing)
            raise TrackingError(
                f"{{log_to}} mlflow: MLflow's SQLite store ({uri or 'the default'}) needs {names},"
                f" which {'is' if len(missing) == 1 else 'are'} not installed: pip install "
                f"'lsakit[mlflow]' (or {' '.join(missing)})"
                + ("" if uri else ", or set MLFLOW_TRACKING_URI to an MLflow server")
            )
        return
    scheme = urllib.parse.urlparse(uri).scheme
    file_store = scheme == "file" or (scheme == "" and uri not in _NAMED_STORES)
    if not file_store or not _file_store_refused():
        return
    if run_file is not None:
        raise TrackingError(
            f"{run_file} continues an MLflow run in the file store {uri}, which MLflow 3 refuses "
            f"unless MLFLOW_ALLOW_FILE_STORE=true: set it to continue that run there, or delete "
            f"{run_file} to track the rest as a new run"
        )
    raise TrackingError(
        f"MLFLOW_TRACKING_URI={uri} is MLflow's file store, which MLflow 3 (its client and UI "
        f"too) refuses unless MLFLOW_ALLOW_FILE_STORE=true: set that as well, or point "
        f"MLFLOW_TRACKING_URI at a database (sqlite:///PATH/mlflow.db) or a server, or unset it "
        f"for lsakit's default (RUN_DIR/../mlflow.db)"
    )


def _file_store_refused() -> bool:
    """Whether the installed MLflow refuses its file store (only versions with the
    ``MLFLOW_ALLOW_FILE_STORE`` switch do, while it is off)."""
    from mlflow import environment_variables

    allow = getattr(environment_variables, "MLFLOW_ALLOW_FILE_STORE", None)
    return allow is not None and not allow.get()


@contextlib.contextmanager
def _opening(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on the folder of a SQLite store's database while MLflow opens it:
    the first opening creates MLflow's tables, and two processes doing that at once (parallel
    runs) fail. No lock for other stores, nor on Windows (no ``flock``)."""
    database = _sqlite_database(uri)
    if database is None or os.name == "nt":
        yield
        return
    import fcntl

    database.parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(database.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # releases the lock


class MlflowTracker:
    """One MLflow run through :class:`mlflow.MlflowClient` (no global active run, so several
    runs can be tracked in one process): params, metrics (step = epoch), artifacts, status."""

    def __init__(self, run_dir: Path, setup: TrackingSetup, *, resume: bool = False) -> None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        self.run_file = run_dir / MLFLOW_RUN_FILE
        saved = _read_run_file(self.run_file) if resume else None
        if saved:
            uri = saved["tracking_uri"]
            _check_store(uri, self.run_file)
        else:
            _check_store(os.environ.get("MLFLOW_TRACKING_URI") or None)
            uri = mlflow_tracking_uri(run_dir, setup)
        try:
            with _opening(uri):
                self.client = MlflowClient(tracking_uri=uri)
            run_id = saved["run_id"] if saved else None
            if run_id is not None and _run_exists(self.client, run_id):
                self.client.update_run(run_id, status="RUNNING")
                self.continued = True
            else:
                experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or setup.experiment
                run = self.client.create_run(
                    _experiment_id(self.client, experiment, _artifact_location(uri)),
                    run_name=setup.run_name or run_dir.name,
                    tags={"lsakit.run_dir": str(run_dir.resolve()), **setup.tags},
                )
                run_id = run.info.run_id
                self.continued = False
                atomic_write_text(
                    self.run_file,
                    json.dumps({"tracking_uri": uri, "run_id": run_id}, indent=2) + "\n",
                )
        except MlflowException as e:
            raise TrackingError(f"MLflow at {uri}: {_first_line(e)}") from None
        self.run_id: str = run_id
        self.where = (
            f"MLflow run {run_id}" + (" (continued)" if self.continued else "") + f" in {uri}"
        )

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        values = [Param(k, str(v)[:_MAX_PARAM]) for k, v in flat_params(params).items()]
        for start in range(0, len(values), 100):  # MLflow takes ≤ 100 params per batch
            self.client.log_batch(self.run_id, params=values[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = [
            Metric(mlflow_key(k), v, now, step)
            for k, v in numeric(metrics).items()
            if not math.isinf(v)
        ]
        if values:
            self.client.log_batch(self.run_id, metrics=values)

    def log_artifacts(self, paths: Iterable[Path]) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path))

    def close(self, status: Status = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def mlflow_key(name: str) -> str:
    """``name`` as an MLflow metric key (letters, digits, ``_-. /`` only): ``pgd=0.3,steps=20±``
    → ``pgd_0.3_steps_20_std``."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name.replace("±", "_std"))


def mlflow_run_id(run_dir: str | os.PathLike[str]) -> str | None:
    """The id of the MLflow run that tracks ``run_dir`` (None when none does)."""
    saved = _read_run_file(Path(run_dir) / MLFLOW_RUN_FILE)
    return saved["run_id"] if saved else None


def _read_run_file(path: Path) -> dict[str, str] | None:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or not {"tracking_uri", "run_id"} <= saved.keys():
        return None
    return {"tracking_uri": str(saved["tracking_uri"]), "run_id": str(saved["run_id"])}


def _run_exists(client: Any, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        return False
    return bool(run.info.lifecycle_stage == "active")


def _artifact_location(uri: str) -> str | None:
    """Where a new experiment in the store ``uri`` keeps its runs' artifacts: ``mlartifacts``
    beside a SQLite database (MLflow's default there is ``./mlruns`` of the current folder); None
    (the store's default) for other stores."""
    database = _sqlite_database(uri)
    return (database.parent / MLFLOW_ARTIFACTS).as_uri() if database is not None else None


def _experiment_id(client: Any, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created (with ``artifact_location``, None: the store's
    default) or restored from deletion when needed."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return str(client.create_experiment(name, artifact_location=artifact_location))
        except MlflowException:  # another process created it just now
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return str(experiment.experiment_id)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
