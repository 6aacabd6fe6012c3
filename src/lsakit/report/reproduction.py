"""The reproduction report: our table beside the paper's, with the figures, as Markdown and HTML.

Khalooei et al. 2022 (arXiv:2202.02626), Tables 2–4 and the figures of §5. :func:`write_report`
renders an :class:`~lsakit.experiments.results.ExperimentResult` (``results.json``) into

- ``report.md``: GitHub-flavoured Markdown, figures linked as ``figures/*.png``;
- ``report.html``: one self-contained page (inline CSS, the PNGs embedded as base64 ``data:`` URIs,
  no script, no external resource), readable offline and safe to mail around;
- ``figures/*.png``: per-layer relative-error curves per base method, the R&G bars, the Moon
  decision boundaries and the loss landscapes of each LR row and its base.

Both documents are built from one list of blocks (:mod:`lsakit.report.blocks`), so they always
say the same thing; what the sections say is :mod:`lsakit.report.sections`, this module draws
the figures and writes the files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lsakit import data
from lsakit._io import atomic_write_text
from lsakit.checkpoint import read_meta
from lsakit.domain import InputDomain, current_domain, input_domain
from lsakit.errors import CheckpointError, ConfigError, InputError, ResultsError
from lsakit.experiments.results import ExperimentResult, RowResult
from lsakit.report.blocks import Heading, Image, render_html, render_markdown
from lsakit.report.figures import (
    PathLike,
    base_groups,
    group_rows,
    load_first_model,
    plot_decision_boundaries,
    plot_landscapes,
    plot_normal_lsa,
    plot_relative_error_curves,
    plot_rg_bars,
    resolve_checkpoint,
)
from lsakit.report.landscape import DEFAULT_STEPS, LandscapeGrid, loss_landscape
from lsakit.report.plots import save_figure
from lsakit.report.sections import LANDSCAPE_SAMPLES, document, title

__all__ = ["LANDSCAPE_SAMPLES", "write_report"]

#: Data options that configure a DataLoader, not the data: dropped when loading tensors here.
_LOADER_ONLY_OPTIONS = ("batch_size", "shuffle", "num_workers", "seed")

# ---------------------------------------------------------------------------------- entry point


def write_report(
    result: ExperimentResult,
    out_dir: PathLike,
    *,
    data_dir: PathLike | None = None,
    landscape_steps: int = DEFAULT_STEPS,
    base_dir: PathLike | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` for a reproduction under ``out_dir``.

    Args:
        result: the reproduction (``ExperimentResult.load("results.json")``).
        out_dir: where the report goes (created).
        data_dir: where the data sets are (for the Moon test points and the landscape batch).
        landscape_steps: grid points per axis of each loss landscape (odd); 0 leaves them out.
        base_dir: the directory relative ``run.checkpoint`` paths are resolved against (then the
            current directory); default ``out_dir``.
        device: where the loss landscapes are computed (``steps²`` forwards per variant: a GPU
            for the CIFAR-10 models).

    Returns:
        ``(report.md, report.html)``.

    Raises:
        ResultsError: the result is inconsistent (a row without runs, lists of the wrong length).
        CheckpointError: a checkpoint the figures need is missing or corrupt (names the file);
            checked before anything is written.
        DataError: the data set the figures need is not available.
    """
    # The figures run the models on the data: under the domain the experiment's data live in
    # (unbounded for the paper protocol's standardized moons).
    with input_domain(_result_domain(result)):
        return _write_report(result, Path(out_dir), data_dir, landscape_steps, base_dir, device)


def reproduction_markdown(result: ExperimentResult) -> str:
    """The report's text as Markdown, without its figures: what ``report.md`` says.

    Needs no checkpoint and no data, only the result: the settings, our table beside the paper's,
    the LR rows against their base, the normal model's MVL list and how to read them (the docs
    site renders its reproduction pages with it).

    Args:
        result: the reproduction (``ExperimentResult.load("results.json")``).

    Returns:
        The Markdown text, its first line the report's title.

    Raises:
        ResultsError: the result is inconsistent (a row without runs, lists of the wrong length).
    """
    _check_result(result)
    blocks = document(result, [], 0)
    return render_markdown([b for b in blocks if b != Heading(2, "Figures")])


def _result_domain(result: ExperimentResult) -> InputDomain:
    """The input domain of the experiment's data; the one in force for a data set unknown here."""
    try:
        return data.domain(result.dataset, **_data_options(result, None))
    except ConfigError:
        return current_domain()


def _write_report(
    result: ExperimentResult,
    out_dir: Path,
    data_dir: PathLike | None,
    landscape_steps: int,
    base_dir: PathLike | None,
    device: str | torch.device,
) -> tuple[Path, Path]:
    _check_result(result)
    if landscape_steps and (
        isinstance(landscape_steps, bool)
        or not isinstance(landscape_steps, int)
        or landscape_steps < 3
        or landscape_steps % 2 == 0
    ):
        raise InputError(
            f"landscape_steps must be 0 (no landscapes) or an odd integer ≥ 3, got "
            f"{landscape_steps!r}"
        )
    out = Path(out_dir)
    figures_dir = out / "figures"
    base = Path(base_dir) if base_dir is not None else out
    boundaries = _is_two_dimensional(result.dataset)
    landscape_groups = _landscape_groups(result) if landscape_steps else {}
    needs_model = {r.name for r in result.rows} if boundaries else set()
    for names in landscape_groups.values():
        needs_model.update(names)
    _preflight_checkpoints([r for r in result.rows if r.name in needs_model], base)
    # Data too is read before anything is written, so a missing data set leaves no half report.
    test_points = (
        data.load_tensors(result.dataset, "test", **_data_options(result, data_dir))
        if boundaries
        else None
    )
    batch = (
        data.load_tensors(
            result.dataset, "test", **_data_options(result, data_dir), limit=LANDSCAPE_SAMPLES
        )
        if landscape_groups
        else None
    )

    figures: list[Image] = []
    if result.normal_lsa:
        path = save_figure(plot_normal_lsa(result), figures_dir / "normal_lsa.png")
        claims = result.published_claims
        overlay = (
            f"; black crosses: the paper's {claims.normal_curve.perturbation} curve"
            if claims is not None and claims.normal_curve is not None
            else ""
        )
        figures.append(
            Image(
                path.relative_to(out),
                f"LSA of the normally trained model (first seed): relative error per layer under "
                f"each perturbation{overlay}.",
            )
        )
    for group in base_groups(result):
        path = save_figure(
            plot_relative_error_curves(result, group=group),
            figures_dir / f"relative_error_{_slug(group)}.png",
        )
        figures.append(
            Image(
                path.relative_to(out),
                f"Per-layer relative error under the LSA attack: normally trained model (before, "
                f"dashed) and {group} with its LR variants after training; circled: the "
                f"regularized layer.",
            )
        )
    path = save_figure(plot_rg_bars(result), figures_dir / "rg_scores.png")
    spread = "mean ± std over seeds" if len(result.seeds) > 1 else "one seed"
    figures.append(Image(path.relative_to(out), f"R&G score per row ({spread}); ◆ = paper."))
    if test_points is not None:
        path = save_figure(
            plot_decision_boundaries(
                result, data_x=test_points[0], data_y=test_points[1], base_dir=base
            ),
            figures_dir / "decision_boundaries.png",
        )
        figures.append(
            Image(
                path.relative_to(out),
                "Decision regions of each row's first-seed model over the input square "
                "([0, 1]², or the test points' box for unbounded inputs), with the test points.",
            )
        )
    if batch is not None:
        x, y = batch
        for group, names in landscape_groups.items():
            grids = _landscapes(result, names, x, y, landscape_steps, base, device)
            path = save_figure(
                plot_landscapes(
                    grids, title=f"{group} and its LR variants: filter-normalized loss slices"
                ),
                figures_dir / f"landscape_{_slug(group)}.png",
            )
            figures.append(
                Image(
                    path.relative_to(out),
                    f"Loss landscapes of {', '.join(names)} (first seed, first {x.shape[0]} "
                    f"test samples, {landscape_steps}×{landscape_steps} grid, shared colour scale).",
                )
            )

    blocks = document(result, figures, landscape_steps if landscape_groups else 0)
    md_path = atomic_write_text(out / "report.md", render_markdown(blocks))
    html_path = atomic_write_text(
        out / "report.html", render_html(blocks, out, title=title(result))
    )
    return md_path, html_path


# ------------------------------------------------------------------------------------- checking


def _check_result(result: ExperimentResult) -> None:
    """Refuse a result the tables could not be drawn from, naming the first problem."""
    if not result.rows:
        raise ResultsError("the results have no rows; re-run the experiment")
    if len(result.eps_paper) != len(result.eps):
        raise ResultsError(
            f"eps has {len(result.eps)} values but eps_paper {len(result.eps_paper)}; "
            f"the results file is inconsistent, re-run the experiment"
        )
    n_eps, n_layers = len(result.eps), len(result.layer_labels)
    for row in result.rows:
        if not row.runs:
            raise ResultsError(f"row {row.name!r} has no runs; re-run the experiment")
        for run in row.runs:
            if len(run.accuracies) != n_eps:
                raise ResultsError(
                    f"row {row.name!r} seed {run.seed} has {len(run.accuracies)} accuracies for "
                    f"{n_eps} ε values; the results file is inconsistent, re-run the experiment"
                )
            if len(run.relative_errors) != n_layers:
                raise ResultsError(
                    f"row {row.name!r} seed {run.seed} has {len(run.relative_errors)} relative "
                    f"errors for {n_layers} layers; the results file is inconsistent"
                )
        if row.published is not None and len(row.published.accuracies) != n_eps:
            raise ResultsError(
                f"row {row.name!r}: the published row has {len(row.published.accuracies)} "
                f"accuracies for {n_eps} ε values; fix the table file"
            )
    for key, values in result.normal_lsa.items():
        if len(values) != n_layers:
            raise ResultsError(
                f"normal_lsa[{key!r}] has {len(values)} values for {n_layers} layers; "
                f"the results file is inconsistent"
            )


def _preflight_checkpoints(rows: Sequence[RowResult], base: Path) -> None:
    """Read the header of every checkpoint the figures will load, before writing anything."""
    for row in rows:
        path = resolve_checkpoint(row.runs[0], base)
        try:
            read_meta(path)
        except CheckpointError as err:
            raise CheckpointError(f"row {row.name!r}: {err}") from None


def _is_two_dimensional(dataset: str) -> bool:
    try:
        return data.info(dataset).input_shape == (2,)
    except ConfigError:  # a data set unknown here: no decision-boundary figure, not a failure
        return False


def _data_options(result: ExperimentResult, data_dir: PathLike | None) -> dict[str, Any]:
    """The data options the experiment ran with (``settings["data_options"]``), for tensors."""
    given = result.settings.get("data_options")
    options: dict[str, Any] = {}
    if isinstance(given, dict):
        options = {k: v for k, v in given.items() if k not in _LOADER_ONLY_OPTIONS}
    options.pop("limit", None)
    if data_dir is not None:
        options["data_dir"] = data_dir
    return options


def _landscape_groups(result: ExperimentResult) -> dict[str, list[str]]:
    """Base row → [base, its "-LR-" rows]: the variants whose landscapes are drawn together."""
    groups: dict[str, list[str]] = {}
    for group in base_groups(result):
        lr_rows = [r.name for r in group_rows(result, group)[1:] if "-LR-" in r.name]
        if lr_rows:
            groups[group] = [group, *lr_rows]
    return groups


def _landscapes(
    result: ExperimentResult,
    names: list[str],
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    base: Path,
    device: str | torch.device,
) -> dict[str, LandscapeGrid]:
    grids: dict[str, LandscapeGrid] = {}
    for name in names:
        model, _ = load_first_model(result.row(name), base, map_location=device)
        # One seed for every variant: the directions are drawn identically (then rescaled to each
        # model's own filters), so the panels differ by the weights only.
        grids[name] = loss_landscape(model, x, y, steps=steps, seed=result.seeds[0])
    return grids


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "row"
