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
) -> Path:
    """One line per perturbation over the layers (the paper's LSA figures); MVL layers shaded.

    Error bars are ±1 std over samples. Adversarial perturbations are drawn solid, noise dashed.
    Written atomically as PNG.
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
        ax.errorbar(
            px,
            py,
            yerr=pe,
            marker="o",
            ms=4,
            capsize=2,
            lw=1.5,
            ls="-" if p.adversarial else "--",
            label=p.name,
        )
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
