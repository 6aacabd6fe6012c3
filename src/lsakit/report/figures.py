"""Figures of a paper reproduction (Khalooei et al. 2022, arXiv:2202.02626, §5 and its figures).

Each function draws a figure from an :class:`~lsakit.experiments.results.ExperimentResult` (or
from loss landscapes) with matplotlib's object API (no pyplot state, no display needed) and
returns the :class:`~matplotlib.figure.Figure` (in Jupyter, a cell's value shows it); write it with
:func:`lsakit.report.plots.save_figure` (atomic) or ``fig.savefig(path)``:

- :func:`plot_relative_error_curves`: per-layer relative error under the LSA attack, before
  (normally trained model) and after training, for one base method and its LR variants;
- :func:`plot_rg_bars`: the R&G score per row (mean ± std over seeds) beside the published one;
- :func:`plot_decision_boundaries`: Moon only, each row's decision regions over [0, 1]², with axes
  in the data's coordinates and a class legend;
- :func:`plot_landscapes`: filter-normalized loss slices (Li et al. 2018), one panel per variant;
- :func:`plot_normal_lsa`: the normally trained model's relative error per layer (paper Fig. 3).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lsakit._outputs import select_logits
from lsakit.checkpoint import load_checkpoint
from lsakit.errors import CheckpointError, ConfigError, InputError, ResultsError
from lsakit.experiments.results import ExperimentResult, RowResult, RunResult
from lsakit.report.landscape import LandscapeGrid
from lsakit.report.plots import new_figure

PathLike = str | os.PathLike[str]

#: Resolution of the decision-region grid over [0, 1]² (points per axis).
BOUNDARY_RESOLUTION = 150

_NORMAL_COLOR = "0.35"


# ---------------------------------------------------------------------------------- row helpers


def base_groups(result: ExperimentResult) -> list[str]:
    """Names of the base-method rows (every trained row except Normal that regularizes nothing)."""
    return [r.name for r in result.rows if r.base is None and r.method != "standard"]


def group_rows(result: ExperimentResult, group: str) -> list[RowResult]:
    """The base row ``group`` followed by its LR rows (``row.base == group``), in result order."""
    names = [r.name for r in result.rows]
    if group not in names:
        raise ConfigError(
            f"no row {group!r} in the results; base groups are: {', '.join(base_groups(result))}"
        )
    return [result.row(group), *(r for r in result.rows if r.base == group)]


def lsa_attack_key(result: ExperimentResult, attack: str | None = None) -> str | None:
    """The key of ``result.normal_lsa`` that matches the attack the trained rows were analysed with.

    ``attack`` given: it must be a key. Otherwise ``settings["lsa_attack"]`` (a perturbation spec
    such as ``"pgd=0.3,steps=20"``) if it is a key, else the key with the same perturbation name
    (the part before ``=``/``,``/``:``), else the only key. None when nothing matches: the "before"
    curve is then left out rather than drawn for a different attack.
    """
    keys = list(result.normal_lsa)
    if attack is not None:
        if attack not in result.normal_lsa:
            raise ConfigError(
                f"attack {attack!r} is not in the normal model's LSA; choose one of {keys}"
            )
        return attack
    spec = result.settings.get("lsa_attack")
    if isinstance(spec, str):
        if spec in result.normal_lsa:
            return spec
        same_name = [k for k in keys if _perturbation_name(k) == _perturbation_name(spec)]
        if len(same_name) == 1:
            return same_name[0]
    return keys[0] if len(keys) == 1 else None


def _perturbation_name(spec: str) -> str:
    for sep in ("=", ",", ":", "("):
        spec = spec.split(sep, 1)[0]
    return spec.strip().lower()


def resolve_checkpoint(run: RunResult, base_dir: PathLike | None = None) -> Path:
    """The file of ``run.checkpoint``: absolute as is; relative against ``base_dir``, then the cwd.

    Raises CheckpointError naming every place looked at when the file is in none of them.
    """
    given = Path(run.checkpoint)
    if given.is_absolute():
        candidates = [given]
    else:
        candidates = [Path(base_dir) / given] if base_dir is not None else []
        candidates.append(given)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = " or ".join(str(c) for c in candidates)
    raise CheckpointError(
        f"checkpoint {run.checkpoint} (seed {run.seed}) not found at {tried}; pass the run "
        f"directory the results were written in (base_dir), or re-run the experiment"
    )


def load_first_model(
    row: RowResult,
    base_dir: PathLike | None = None,
    *,
    map_location: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, Path]:
    """The first seed's model of ``row``, in eval mode on ``map_location``, with its file."""
    if not row.runs:
        raise ResultsError(f"row {row.name!r} has no runs; re-run the experiment")
    path = resolve_checkpoint(row.runs[0], base_dir)
    try:
        model, _meta = load_checkpoint(path, map_location=map_location)
    except CheckpointError as err:
        raise CheckpointError(f"row {row.name!r}: {err}") from None
    return model, path


# -------------------------------------------------------------------------------------- figures


def plot_relative_error_curves(
    result: ExperimentResult, *, group: str, attack: str | None = None
) -> Figure:
    """Per-layer relative error under the LSA attack, before and after training (paper Figs. 5–7).

    "Before" is the normally trained model (``result.normal_lsa[attack]``, the attack found by
    :func:`lsa_attack_key` unless given), drawn dashed; then one line per row of the group (the
    base AT and its ``-LR-`` rows, ``row.relative_errors_mean``: mean over samples, averaged over
    seeds). A row's regularized layers are circled in its colour, so the paper's observation (the
    regularized layer's error drops to about 0) can be read off directly.

    Args:
        result: the reproduction.
        group: the base row (e.g. ``AT-FGSM``), drawn with its LR rows (:func:`group_rows`).
        attack: the key of ``result.normal_lsa`` of the "before" curve (default: found by
            :func:`lsa_attack_key`).

    Returns:
        The figure.

    Raises:
        ConfigError: ``group`` or ``attack`` is not in the result.
    """
    rows = group_rows(result, group)
    labels = result.layer_labels
    xs = list(range(len(labels)))
    fig = new_figure(figsize=(max(5.5, 0.45 * len(labels) + 3.5), 3.8), dpi=120)
    ax = fig.add_subplot()
    key = lsa_attack_key(result, attack)
    if key is not None:
        _curve(
            ax, xs, result.normal_lsa[key], label="Normal (before)", color=_NORMAL_COLOR, ls="--"
        )
    for k, row in enumerate(rows):
        color = f"C{k}"
        values = row.relative_errors_mean
        _curve(ax, xs, values, label=row.name, color=color, ls="-")
        for layer in _regularized_indices(row, labels):
            value = values[layer]
            if value is not None:
                ax.plot([layer], [value], marker="o", ms=11, mfc="none", mec=color, mew=1.8)
    ax.set_xticks(xs, labels, rotation=0 if len(labels) < 12 else 90)
    ax.set_xlabel("layer (forward order); circled: regularized layer")
    ax.set_ylabel("relative error ‖φ(x) − φ(x̂)‖ / ‖φ(x)‖")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    attack_text = result.settings.get("lsa_attack", key or "LSA attack")
    ax.set_title(f"{group}: per-layer relative error under {attack_text}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_normal_lsa(result: ExperimentResult) -> Figure:
    """The normally trained model's relative error per layer, one line per perturbation of its
    LSA (paper Fig. 3), with the paper's stated curve (``published_claims.normal_curve``)
    overlaid as black crosses where the paper gives one.

    Args:
        result: the reproduction.

    Returns:
        The figure.
    """
    labels = result.layer_labels
    xs = list(range(len(labels)))
    fig = new_figure(figsize=(max(5.5, 0.45 * len(labels) + 3.5), 3.8), dpi=120)
    ax = fig.add_subplot()
    for k, (name, values) in enumerate(result.normal_lsa.items()):
        _curve(ax, xs, values, label=name, color=f"C{k}", ls="-")
    claims = result.published_claims
    curve = claims.normal_curve if claims is not None else None
    if curve is not None and len(curve.values) == len(labels):
        ax.plot(xs, curve.values, ls=":", marker="x", ms=8, mew=2, color="black",
                label=f"paper: {curve.perturbation}")  # fmt: skip
    ax.set_xticks(xs, labels, rotation=0 if len(labels) < 12 else 90)
    ax.set_xlabel("layer (forward order)")
    ax.set_ylabel("relative error ‖φ(x) − φ(x̂)‖ / ‖φ(x)‖")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(
        f"normally trained model ({result.protocol} protocol):\nrelative error per perturbation",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def _curve(
    ax: Axes, xs: list[int], values: list[float | None], *, label: str, color: str, ls: str
) -> None:
    points = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
    if points:
        px, py = zip(*points, strict=True)
        ax.plot(px, py, marker="o", ms=4, lw=1.5, ls=ls, color=color, label=label)


def _regularized_indices(row: RowResult, labels: list[str]) -> list[int]:
    """Positions of the row's regularized layers among the LSA labels (unknown names skipped)."""
    layers = row.resolved_layers or row.lr_layers or []
    return [labels.index(name) for name in layers if name in labels]


def plot_rg_bars(result: ExperimentResult) -> Figure:
    """The R&G score (sum of FGSM accuracies over the ε grid, clean included; paper §5) per row.

    Bars are the mean over seeds with ± 1 sample std as error bars; a black diamond marks the
    published score where the paper has the row. Rows are coloured by base method (Normal grey),
    LR rows hatched. The y axis starts near the smallest score so differences of a few points
    stay visible; its lower limit is printed in the axis label.

    Args:
        result: the reproduction; rows without runs are left out.

    Returns:
        The figure.
    """
    rows = [r for r in result.rows if r.runs]
    groups = base_groups(result)
    xs = np.arange(len(rows))
    fig = new_figure(figsize=(max(6.0, 0.45 * len(rows) + 2.5), 4.2), dpi=120)
    ax = fig.add_subplot()
    for x, row in zip(xs, rows, strict=True):
        owner = row.name if row.base is None else row.base
        color = f"C{groups.index(owner) % 10}" if owner in groups else _NORMAL_COLOR
        ax.bar(
            x,
            row.rg_mean,
            yerr=row.rg_std if row.varied else None,
            color=color,
            alpha=0.55 if row.base is not None else 0.9,
            hatch="//" if row.base is not None else None,
            edgecolor=color,
            capsize=3,
        )
    published = [(x, r.published.rg) for x, r in zip(xs, rows, strict=True) if r.published]
    if published:
        px, py = zip(*published, strict=True)
        ax.plot(px, py, ls="none", marker="D", ms=5, color="black", label="paper")
        ax.legend(fontsize=8)
    values = [r.rg_mean - r.rg_std for r in rows] + [v for _, v in published]
    top = max([r.rg_mean + r.rg_std for r in rows] + [v for _, v in published])
    bottom = max(0.0, math.floor(0.9 * min(values) / 10) * 10) if values else 0.0
    ax.set_ylim(bottom, top + 0.05 * (top - bottom) + 1)
    ax.set_xticks(xs, [r.name for r in rows], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(f"R&G score (axis from {bottom:g})")
    ax.grid(axis="y", alpha=0.3)
    n = len(result.seeds)
    spread = f"mean ± std over {n} seeds" if n > 1 else "one seed"
    ax.set_title(f"{result.experiment}: R&G per training variant, {spread}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_decision_boundaries(
    result: ExperimentResult,
    *,
    data_x: torch.Tensor,
    data_y: torch.Tensor,
    base_dir: PathLike | None = None,
) -> Figure:
    """Decision regions of each row's first-seed model over [0, 1]², with the given points (Moon).

    One small panel per row. For two classes the colour is p(class 1) and the 0.5 contour is the
    boundary; otherwise the regions of the predicted class. Axes are in the coordinates the
    models read (``x₁``, ``x₂``; the data's ``coordinates`` option names them: unit,
    standardized, raw), and one legend under the panels names the classes.

    Args:
        result: the reproduction; each row with runs gets a panel.
        data_x: the points drawn, shape (N, 2).
        data_y: their labels, shape (N,).
        base_dir: where relative ``run.checkpoint`` paths are found (see
            :func:`resolve_checkpoint`).

    Returns:
        The figure.

    Raises:
        InputError: the points are not 2-D inputs with one label each.
        CheckpointError: a row's checkpoint is missing or unreadable (names the file).
    """
    if data_x.dim() != 2 or data_x.shape[1] != 2 or data_y.shape != (data_x.shape[0],):
        raise InputError(
            f"decision boundaries need 2-D points (N, 2) and labels (N,), got "
            f"{tuple(data_x.shape)} and {tuple(data_y.shape)}; they are drawn for Moon only"
        )
    rows = [r for r in result.rows if r.runs]
    models = [(row, load_first_model(row, base_dir)[0]) for row in rows]
    # [0, 1]² for unit inputs; the points' box with a margin for unbounded ones (z-scores).
    unit = bool(((data_x >= 0) & (data_x <= 1)).all())
    if unit:
        low, high = torch.zeros(2), torch.ones(2)
    else:
        margin = 0.1 * (data_x.amax(0) - data_x.amin(0))
        low, high = data_x.amin(0) - margin, data_x.amax(0) + margin
    gx, gy = torch.meshgrid(
        torch.linspace(float(low[0]), float(high[0]), BOUNDARY_RESOLUTION),
        torch.linspace(float(low[1]), float(high[1]), BOUNDARY_RESOLUTION),
        indexing="xy",
    )
    points = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    coordinates = _coordinates(result, unit)
    ncols = min(4, len(rows))
    nrows = math.ceil(len(rows) / ncols)
    fig = new_figure(figsize=(2.7 * ncols, 2.7 * nrows + 0.8), dpi=110, layout="constrained")
    labels = data_y.numpy() % 2
    two_classes = False
    for k, (row, model) in enumerate(models):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        with torch.no_grad():
            logits = select_logits(model(points))
        shape = (BOUNDARY_RESOLUTION, BOUNDARY_RESOLUTION)
        if logits.shape[1] == 2:
            two_classes = True
            p1 = torch.softmax(logits, dim=1)[:, 1].reshape(shape).numpy()
            ax.contourf(
                gx.numpy(), gy.numpy(), p1, levels=np.linspace(0, 1, 11), cmap="RdBu", alpha=0.4
            )
            ax.contour(gx.numpy(), gy.numpy(), p1, levels=[0.5], colors="k", linewidths=1)
        else:
            pred = logits.argmax(dim=1).reshape(shape).numpy()
            ax.contourf(gx.numpy(), gy.numpy(), pred, cmap="tab10", alpha=0.4)
        for label, color in enumerate(_CLASS_COLORS):
            chosen = labels == label
            ax.scatter(data_x[chosen, 0].numpy(), data_x[chosen, 1].numpy(), color=color, s=3, lw=0)
        ax.set_xlim(float(low[0]), float(high[0]))
        ax.set_ylim(float(low[1]), float(high[1]))
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6, length=2, pad=1)
        if k % ncols == 0:
            ax.set_ylabel(f"x₂ ({coordinates})", fontsize=7)
        if k + ncols >= len(rows):  # the lowest panel of its column
            ax.set_xlabel(f"x₁ ({coordinates})", fontsize=7)
        ax.set_title(f"{row.name}\nclean {row.runs[0].accuracies[0]:.1f}% (this seed)", fontsize=8)
    handles: list[Artist] = [
        Line2D([], [], ls="none", marker="o", ms=4, color=color, label=f"test points of class {c}")
        for c, color in enumerate(_CLASS_COLORS)
    ]
    if two_classes:
        handles.append(Line2D([], [], color="k", lw=1, label="decision boundary: p(class 1) = 0.5"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=7,
               frameon=False)  # fmt: skip
    fig.suptitle(
        f"{result.experiment}: decision regions (first seed), test points; inputs in "
        + ("[0, 1]²" if unit else "the points' box")
        + (
            "; shading: p(class 1), red 0 → blue 1" if two_classes else "; shading: predicted class"
        ),
        fontsize=9,
    )
    return fig


#: Colours of the test points of class 0 and class 1 (the ends of the RdBu shading).
_CLASS_COLORS = ("tab:red", "tab:blue")


def _coordinates(result: ExperimentResult, unit: bool) -> str:
    """The name of the coordinates the inputs are in (the data's ``coordinates`` option)."""
    options = result.settings.get("data_options")
    given = options.get("coordinates") if isinstance(options, dict) else None
    if isinstance(given, str) and given:
        return f"{given} coordinates"
    return "unit coordinates" if unit else "input coordinates"


def plot_landscapes(grids: Mapping[str, LandscapeGrid], *, title: str | None = None) -> Figure:
    """Contour panels of filter-normalized loss slices (Li et al. 2018), one per variant.

    One figure for all the variants, so that every panel shares one logarithmic colour scale of
    the loss and flatter (wider) basins can be compared across variants; the star is the trained
    weights (α = β = 0). For a figure per variant, call it once per variant.

    Args:
        grids: variant name → its landscape (:func:`~lsakit.report.loss_landscape`), in panel
            order.
        title: the figure's title (default: what the panels are).

    Returns:
        The figure.

    Raises:
        InputError: ``grids`` is empty.
    """
    if not grids:
        raise InputError("plot_landscapes needs at least one landscape")
    finite = np.concatenate([g.losses[np.isfinite(g.losses)] for g in grids.values()])
    floor = max(float(finite.min()) if finite.size else 1e-3, 1e-6)
    ceiling = max(float(finite.max()) if finite.size else 1.0, floor * 1.01)
    levels = np.geomspace(floor, ceiling, 21)
    norm = LogNorm(vmin=floor, vmax=ceiling)
    ncols = min(4, len(grids))
    nrows = math.ceil(len(grids) / ncols)
    fig = new_figure(figsize=(3.0 * ncols + 0.8, 2.9 * nrows + 0.3), dpi=110, layout="constrained")
    contour = None
    axes = []
    for k, (name, g) in enumerate(grids.items()):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        axes.append(ax)
        # Non-finite losses (overflow far from θ) are drawn at the top of the scale.
        loss = np.clip(np.nan_to_num(g.losses, nan=ceiling, posinf=ceiling), floor, ceiling)
        a, b = np.meshgrid(g.alphas, g.betas, indexing="ij")
        contour = ax.contourf(a, b, loss, levels=levels, norm=norm, cmap="viridis")
        ax.contour(a, b, loss, levels=levels[::4], norm=norm, colors="white", linewidths=0.5)
        ax.plot([0], [0], marker="*", ms=9, color="red")
        ax.set_title(f"{name}\nL(θ) = {g.center_loss:.3g}", fontsize=8)
        ax.set_xlabel("α (d1)", fontsize=8)
        ax.set_ylabel("β (d2)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_aspect("equal")
    if contour is not None:
        bar = fig.colorbar(contour, ax=axes, shrink=0.85, ticks=levels[::4], format="%.3g")
        bar.set_label("cross-entropy (log scale)", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    fig.suptitle(title or "loss landscapes (filter-normalized 2-D slices)", fontsize=9)
    return fig
