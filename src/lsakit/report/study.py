"""The report of a companion-method study: ``report.md`` and ``accuracy.png``.

:func:`write_study_report` renders a :class:`~lsakit.experiments.results.StudyResult` (written by
:func:`lsakit.experiments.studies.run_study`, which calls it): each row's metrics as mean ± std
over seeds (for stochastic models, over repeated evaluations when one seed; no ± where nothing
varied), what the study checks, the profile's notes, the documented choices, and the accuracies
as grouped bars.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from lsakit._io import atomic_write, atomic_write_text
from lsakit.experiments.results import StudyResult, mean_std, percent_metric

if TYPE_CHECKING:
    from lsakit.experiments.studies import StudyConfig


def write_study_report(config: StudyConfig, result: StudyResult, out_dir: str | Path) -> Path:
    """``report.md`` (table, targets, notes, choices) and ``accuracy.png`` in ``out_dir``.

    Args:
        config: the study the result was run from (its description, targets, choices and the
            profile's notes).
        result: the study's result; its ``profile`` must be a profile of ``config``.
        out_dir: the folder written into (created if missing); both files are written
            atomically.

    Returns:
        The path of ``report.md``.
    """
    out = Path(out_dir)
    keys: list[str] = []
    for row_metrics in result.summary.values():
        for key in row_metrics:
            if key not in keys:
                keys.append(key)
    seeds = sorted({r.seed for r in result.runs})
    lines = [
        f"# {config.study}: {config.description}",
        "",
        f"Profile `{result.profile}`, seeds {seeds}, {config.model} on {config.dataset}. "
        "Accuracies in % (mean ± std over seeds; for stochastic models, over repeated "
        "evaluations when one seed; no ± where nothing varied), sparsity and k-NN overlap as "
        "fractions.",
        "",
        "| row | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for row, row_metrics in result.summary.items():
        cells = []
        for key in keys:
            if key not in row_metrics:
                cells.append("—")
                continue
            mean, std = row_metrics[key]
            scale = 100 if percent_metric(key) else 1
            digits = 2 if percent_metric(key) else 3
            cells.append(
                mean_std(scale * mean, None if std is None else scale * std, digits=digits)
            )
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    if config.targets:
        lines += ["", "## What is checked", "", *[f"- {t}" for t in config.targets]]
    notes = config.profiles[result.profile].notes
    if notes:
        lines += ["", "## This profile", "", notes]
    if config.choices:
        lines += ["", "## Documented choices", "", *[f"- {c}" for c in config.choices]]
    lines += ["", "![accuracy](accuracy.png)", ""]
    path = atomic_write_text(out / "report.md", "\n".join(lines))
    _plot(result, out / "accuracy.png")
    return path


def _plot(result: StudyResult, path: Path) -> None:
    fig = study_figure(result)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def study_figure(result: StudyResult) -> Figure:
    """The accuracies of every row as grouped bars (± std where something varied); the legend
    of the metrics above the bars, outside the axes, so it covers none of them."""
    rows = list(result.summary)
    keys = [
        k for k in next(iter(result.summary.values())) if percent_metric(k) and "noise off" not in k
    ]
    fig = Figure(
        figsize=(max(6.0, 1.2 * len(rows) * max(1, len(keys)) / 2), 4.4),
        dpi=120,
        layout="constrained",
    )
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(keys))
    for i, key in enumerate(keys):
        means = [100 * result.summary[r].get(key, (0.0, None))[0] for r in rows]
        stds = [result.summary[r].get(key, (0.0, None))[1] for r in rows]
        positions = [j + i * width for j in range(len(rows))]
        errors = [100 * s if s is not None else 0.0 for s in stds]
        ax.bar(positions, means, width, yerr=errors if any(stds) else None, label=key, capsize=2)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))], rows, rotation=20, ha="right")
    ax.set_ylabel("accuracy (%)")
    if keys:
        fig.legend(loc="outside upper center", ncol=min(len(keys), 3), fontsize=7, frameon=False)
    return fig
