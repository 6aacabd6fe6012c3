"""Paper reproductions: declarative configs, the published tables as data, one runner."""

from lsakit.experiments.config import (
    SUITES,
    ExperimentConfig,
    experiment_names,
    load_experiment,
    load_table,
    row_specs,
)
from lsakit.experiments.results import ExperimentResult, RowResult, RunResult
from lsakit.experiments.runner import run_experiment

__all__ = [
    "SUITES",
    "ExperimentConfig",
    "ExperimentResult",
    "RowResult",
    "RunResult",
    "experiment_names",
    "load_experiment",
    "load_table",
    "row_specs",
    "run_experiment",
]
