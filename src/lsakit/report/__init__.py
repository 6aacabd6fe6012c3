"""Plots and reports."""

from lsakit.report.plots import plot_layer_curves

__all__ = ["plot_layer_curves"]
