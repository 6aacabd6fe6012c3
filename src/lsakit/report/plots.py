"""Figures of the paper, drawn with matplotlib's object API (no pyplot state, no display needed).

Every ``plot_*`` function of :mod:`lsakit.report` returns a :class:`~matplotlib.figure.Figure`;
:func:`save_figure` writes one atomically (``fig.savefig(path)`` works too). Each figure is made by
:func:`new_figure`, which in a Jupyter kernel makes a figure that is a cell's value show as a PNG
image without ``matplotlib.pyplot`` (which would otherwise have to be imported for that).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from lsakit._io import atomic_write
from lsakit.analysis import LayerInfo, LSAResult

_MEASURE_LABELS = {
    "relative_error": "relative error ‖φ(x) − φ(x̂)‖ / ‖φ(x)‖",
    "mse": "mean squared difference",
    "cosine_distance": "cosine distance",
    "linf": "L∞ of the difference",
}


def new_figure(**kwargs: Any) -> Figure:
    """A new matplotlib figure (``Figure(**kwargs)``) that shows as a PNG image in Jupyter.

    IPython shows a figure that is a cell's value as an image only once a display format is
    registered for figures, which matplotlib-inline (a kernel's backend) does when
    ``matplotlib.pyplot`` is imported. These figures never touch pyplot, so in a kernel with no
    format for figures yet, matplotlib-inline's default is registered (PNG, cropped to the
    drawing: ``bbox_inches="tight"``) with IPython's own ``select_figure_formats``, pyplot left
    unimported; a later pyplot import applies the ``InlineBackend`` configuration as usual, and
    a format already registered is left as it is.

    Args:
        **kwargs: the arguments of :class:`~matplotlib.figure.Figure` (``figsize``, ``dpi``, …).

    Returns:
        The empty figure.
    """
    shell = _kernel_shell()
    if shell is not None:
        formatters = shell.display_formatter.formatters.values()
        if not any(_shows_figures(formatter) for formatter in formatters):
            pylabtools = importlib.import_module("IPython.core.pylabtools")
            pylabtools.select_figure_formats(shell, {"png"}, bbox_inches="tight")
    return Figure(**kwargs)


def _kernel_shell() -> Any:
    """The IPython shell of a running Jupyter kernel, or None (no IPython, or not a kernel's:
    a terminal's IPython shows no images)."""
    ipython = sys.modules.get("IPython")
    shell = None if ipython is None else ipython.get_ipython()
    return shell if getattr(shell, "kernel", None) is not None else None


def _shows_figures(formatter: Any) -> bool:
    """Whether an IPython display formatter has a printer for matplotlib figures."""
    try:
        formatter.lookup_by_type(Figure)
    except KeyError:
        return False
    return True


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as a PNG at ``path``, atomically (a reader never sees half a file).

    Args:
        fig: the figure, e.g. what a ``plot_*`` function returned.
        path: the file; missing parent directories are created.

    Returns:
        The path written.
    """
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def plot_layer_curves(
    result: LSAResult,
    *,
    mvl: Sequence[LayerInfo] = (),
    title: str | None = None,
    std_band: bool = False,
) -> Figure:
    """One line per perturbation over the layers (the paper's LSA figures); MVL layers shaded.

    Lines are per-layer means (as in the paper's figures); ``std_band`` adds a ±1 std band over
    samples. Adversarial perturbations are drawn solid, noise dashed.

    Args:
        result: the analysis.
        mvl: layers to shade (e.g. ``result.most_vulnerable_layers()``).
        title: the figure's title (none by default).
        std_band: also draw each line's ±1 std band.

    Returns:
        The figure; write it with :func:`save_figure` (or ``fig.savefig(path)``).
    """
    labels = [layer.label for layer in result.layers]
    xs = list(range(len(labels)))
    fig = new_figure(figsize=(max(5.0, 0.45 * len(labels) + 3), 3.8), dpi=120)
    ax = fig.add_subplot()
    mvl_labels = {layer.label for layer in mvl}
    for i, label in enumerate(labels):
        if label in mvl_labels:
            ax.axvspan(i - 0.4, i + 0.4, color="tab:red", alpha=0.12, lw=0)
    for p in result.perturbations:
        points = [
            (x, s.mean, s.std or 0.0)
            for x, s in zip(xs, p.layers, strict=True)
            if s.mean is not None
        ]
        if not points:
            continue
        px, py, pe = zip(*points, strict=True)
        (line,) = ax.plot(
            px, py, marker="o", ms=4, lw=1.5, ls="-" if p.adversarial else "--", label=p.name
        )
        if std_band:
            low = [m - e for m, e in zip(py, pe, strict=True)]
            high = [m + e for m, e in zip(py, pe, strict=True)]
            ax.fill_between(px, low, high, color=line.get_color(), alpha=0.12, lw=0)
    ax.set_xticks(xs, labels, rotation=0 if len(labels) < 12 else 90)
    ax.set_xlabel("layer (forward order)" + ("; shaded: MVL" if mvl_labels else ""))
    ax.set_ylabel(_MEASURE_LABELS.get(result.measure, result.measure))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
