"""Drawing a genotype's cells as a PNG with matplotlib (no graphviz): :func:`plot_cell`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from lsakit._io import atomic_write
from lsakit.errors import ConfigError
from lsakit.nas.genotype_format import Genotype, GenotypeEdge
from lsakit.validate import choice

_OP_COLORS = {
    "none": "#bbbbbb",
    "skip_connect": "#4c72b0",
    "max_pool_3x3": "#55a868",
    "avg_pool_3x3": "#8fd19e",
    "conv_3x3": "#c44e52",
    "sep_conv_3x3": "#dd8452",
    "sep_conv_5x5": "#937860",
    "dil_conv_3x3": "#8172b2",
    "dil_conv_5x5": "#da8bc3",
}


def _curve(start: tuple[float, float], end: tuple[float, float], bend: float) -> list[list[float]]:
    """Points of a quadratic Bézier from ``start`` to ``end`` bulging by ``bend`` × length,
    trimmed at both ends so arrows stop at the node circles (data coordinates)."""
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2 - bend * dy, (y0 + y1) / 2 + bend * dx
    length = max((dx * dx + dy * dy) ** 0.5, 1e-9)
    trim = min(0.22 / length, 0.3)
    steps = 24
    points = []
    for k in range(steps + 1):
        t = trim + (1 - 2 * trim) * k / steps
        a, b, c = (1 - t) ** 2, 2 * t * (1 - t), t**2
        points.append([a * x0 + b * cx + c * x1, a * y0 + b * cy + c * y1])
    return points


def _draw_cell(ax: Any, edges: Sequence[GenotypeEdge], concat: Sequence[int], title: str) -> None:
    from matplotlib.patches import FancyArrowPatch
    from matplotlib.path import Path as MplPath

    nodes = len(edges) // 2
    pos: dict[int, tuple[float, float]] = {0: (0.0, 1.0), 1: (0.0, -1.0)}
    for j in range(nodes):
        pos[j + 2] = (1.8 * (j + 1), 0.8 if j % 2 == 0 else -0.8)
    out = (1.8 * (nodes + 1), 0.0)

    def arrow(points: list[list[float]], color: str, style: str, width: float) -> None:
        ax.add_patch(
            FancyArrowPatch(
                path=MplPath(points),
                arrowstyle="-|>",
                mutation_scale=11,
                color=color,
                lw=width,
                linestyle=style,
            )
        )

    for k, (op, source) in enumerate(edges):
        color = _OP_COLORS.get(op, "black")
        points = _curve(pos[source], pos[k // 2 + 2], 0.18 if k % 2 else -0.18)
        arrow(points, color, "-", 1.6)
        # Labels of a node's two inputs sit at different fractions of the curves, so the labels
        # of edges converging on one node do not overlap.
        lx, ly = points[(len(points) * (2 if k % 2 else 3)) // 5]
        ax.text(
            lx,
            ly,
            op,
            fontsize=7,
            ha="center",
            va="center",
            color=color,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
        )
    for i in concat:
        arrow(_curve(pos[i], out, 0.0), "#888888", "--", 1.0)
    names = {0: "$c_{k-2}$", 1: "$c_{k-1}$"} | {j + 2: str(j) for j in range(nodes)}
    for i, (x, y) in pos.items():
        face = "#d8e6f3" if i < 2 else "#fbe3c6"
        bbox = {"boxstyle": "circle,pad=0.3", "fc": face, "ec": "black"}
        ax.text(x, y, names[i], ha="center", va="center", fontsize=8, bbox=bbox)
    bbox = {"boxstyle": "circle,pad=0.3", "fc": "#cfe8cf", "ec": "black"}
    ax.text(out[0], out[1], "$c_{k}$", ha="center", va="center", fontsize=8, bbox=bbox)
    ax.set_xlim(-0.5, out[0] + 0.5)
    ax.set_ylim(-1.5, 1.5)
    ax.set_title(title)
    ax.set_axis_off()


def plot_cell(
    genotype: Genotype,
    path: str | os.PathLike[str],
    *,
    kinds: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Draw the genotype's cells (normal, and reduce when present) as a PNG; no graphviz.

    Inputs c_{k−2}, c_{k−1} on the left, intermediate nodes in the middle (one colour per op on
    the edges, labelled), the concatenated output c_k on the right (dashed edges). Written
    atomically; returns the path.

    Args:
        genotype: the genotype whose cells are drawn.
        path: the PNG file to write (parent directories are created; an existing file is
            replaced).
        kinds: the cell types to draw, one row each, among ``"normal"`` and ``"reduce"``
            (default: the normal cell, and the reduce cell when the genotype has one).
        title: an optional title above the figure.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    chosen = (
        list(kinds)
        if kinds is not None
        else (["normal", "reduce"] if genotype.reduce else ["normal"])
    )
    for kind in chosen:
        choice(kind, "kind", ("normal", "reduce"))
        if not genotype.cell(kind)[0]:
            raise ConfigError(f"the genotype has no {kind} cell to draw")
    width = max(genotype.nodes(k) for k in chosen) * 1.5 + 3
    fig = Figure(figsize=(width, 3.0 * len(chosen)), dpi=120)
    for row, kind in enumerate(chosen):
        ax = fig.add_subplot(len(chosen), 1, row + 1)
        edges, concat = genotype.cell(kind)
        _draw_cell(ax, edges, concat, f"{kind} cell")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
