"""Plots and reports.

Every ``plot_*`` function returns a :class:`matplotlib.figure.Figure` (in Jupyter, a cell's value
shows it); :func:`save_figure` writes one as a PNG, atomically.
"""

from lsakit.report.figures import (
    plot_decision_boundaries,
    plot_landscapes,
    plot_relative_error_curves,
    plot_rg_bars,
)
from lsakit.report.landscape import LandscapeGrid, filter_normalized_directions, loss_landscape
from lsakit.report.plots import plot_layer_curves, save_figure
from lsakit.report.reproduction import reproduction_markdown, write_report
from lsakit.report.study import write_study_report

__all__ = [
    "LandscapeGrid",
    "filter_normalized_directions",
    "loss_landscape",
    "plot_decision_boundaries",
    "plot_landscapes",
    "plot_layer_curves",
    "plot_relative_error_curves",
    "plot_rg_bars",
    "reproduction_markdown",
    "save_figure",
    "write_report",
    "write_study_report",
]
