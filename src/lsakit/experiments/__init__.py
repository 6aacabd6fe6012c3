"""Paper reproductions and companion-method studies: declarative configs, the published tables
as data, and one grid runner (:mod:`lsakit.experiments.runner`) for both."""

from lsakit.experiments.config import (
    SUITES,
    ExperimentConfig,
    experiment_names,
    load_experiment,
    load_table,
    row_specs,
)
from lsakit.experiments.reproduction import ReproductionSpec, run_experiment
from lsakit.experiments.results import (
    ExperimentResult,
    RowResult,
    RunResult,
    StudyResult,
    StudyRun,
)
from lsakit.experiments.runner import GridError, RunRecord, RunSpec, run_grid

__all__ = [
    "SUITES",
    "ExperimentConfig",
    "ExperimentResult",
    "GridError",
    "ReproductionSpec",
    "RowResult",
    "RunRecord",
    "RunResult",
    "RunSpec",
    "StudyResult",
    "StudyRun",
    "experiment_names",
    "load_experiment",
    "load_table",
    "row_specs",
    "run_experiment",
    "run_grid",
]
