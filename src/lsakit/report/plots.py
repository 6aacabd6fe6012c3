"""Figures of the paper, drawn with matplotlib's object API (no pyplot state, no display needed)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from lsakit._io import atomic_write
from lsakit.analysis import LayerInfo, LSAResult

_MEASURE_LABELS = {
    "relative_error": "relative error ‖φ(x) − φ(x̂)‖ / ‖φ(x)‖",
    "mse": "mean squared difference",
    "cosine_distance": "cosine distance",
    "linf": "L∞ of the difference",
}


def plot_layer_curves(
    result: LSAResult,
    path: str | os.PathLike[str],
    *,
    mvl: Sequence[LayerInfo] = (),
    title: str | None = None,
    std_band: bool = False,
) -> Path:
    """One line per perturbation over the layers (the paper's LSA figures); MVL layers shaded.

    Lines are per-layer means (as in the paper's figures); ``std_band`` adds a ±1 std band over
    samples. Adversarial perturbations are drawn solid, noise dashed. Written atomically as PNG.
    """
    labels = [layer.label for layer in result.layers]
    xs = list(range(len(labels)))
    fig = Figure(figsize=(max(5.0, 0.45 * len(labels) + 3), 3.8), dpi=120)
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
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
