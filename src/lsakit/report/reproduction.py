"""The reproduction report: our table beside the paper's, with the figures, as Markdown and HTML.

Khalooei et al. 2022 (arXiv:2202.02626), Tables 2–4 and the figures of §5. :func:`write_report`
renders an :class:`~lsakit.experiments.results.ExperimentResult` (``results.json``) into

- ``report.md``: GitHub-flavoured Markdown, figures linked as ``figures/*.png``;
- ``report.html``: one self-contained page (inline CSS, the PNGs embedded as base64 ``data:`` URIs,
  no script, no external resource), readable offline and safe to mail around;
- ``figures/*.png``: per-layer relative-error curves per base method, the R&G bars, the Moon
  decision boundaries and the loss landscapes of each LR row and its base.

Both documents are built from one list of blocks (headings, paragraphs, tables, figures), so they
always say the same thing; every text that comes from the results is escaped for its format.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import torch

from lsakit import data
from lsakit._io import atomic_write_text
from lsakit.checkpoint import read_meta
from lsakit.domain import InputDomain, current_domain, input_domain
from lsakit.errors import CheckpointError, ConfigError, InputError, ResultsError
from lsakit.experiments.results import ExperimentResult, RowResult, mean_std
from lsakit.report.figures import (
    PathLike,
    base_groups,
    group_rows,
    load_first_model,
    lsa_attack_key,
    plot_decision_boundaries,
    plot_landscapes,
    plot_normal_lsa,
    plot_relative_error_curves,
    plot_rg_bars,
    resolve_checkpoint,
)
from lsakit.report.landscape import DEFAULT_STEPS, LandscapeGrid, loss_landscape

#: Test samples the loss landscapes are computed on (the first ones of the test split).
LANDSCAPE_SAMPLES = 256
#: Data options that configure a DataLoader, not the data: dropped when loading tensors here.
_LOADER_ONLY_OPTIONS = ("batch_size", "shuffle", "num_workers", "seed")

# ------------------------------------------------------------------------------------ the blocks

#: A table cell: its text, or (text, CSS class) for cells the HTML colours (Δ signs).
Cell: TypeAlias = str | tuple[str, str]


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[Cell]]
    #: HTML only: a first header row of (text, column span) groups, and the header row under it
    #: (default ``header``) — the groups carry what Markdown has to repeat in every column name.
    groups: list[tuple[str, int]] = field(default_factory=list)
    html_header: list[str] | None = None
    css: str = ""


@dataclass(frozen=True)
class Image:
    path: Path  # relative to the report's directory
    caption: str


@dataclass(frozen=True)
class Code:
    summary: str
    text: str


Block: TypeAlias = Heading | Paragraph | Bullets | Table | Image | Code


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
        path = plot_normal_lsa(result, figures_dir / "normal_lsa.png")
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
        path = plot_relative_error_curves(
            result, figures_dir / f"relative_error_{_slug(group)}.png", group=group
        )
        figures.append(
            Image(
                path.relative_to(out),
                f"Per-layer relative error under the LSA attack: normally trained model (before, "
                f"dashed) and {group} with its LR variants after training; circled: the "
                f"regularized layer.",
            )
        )
    path = plot_rg_bars(result, figures_dir / "rg_scores.png")
    spread = "mean ± std over seeds" if len(result.seeds) > 1 else "one seed"
    figures.append(Image(path.relative_to(out), f"R&G score per row ({spread}); ◆ = paper."))
    if test_points is not None:
        path = plot_decision_boundaries(
            result,
            figures_dir / "decision_boundaries.png",
            data_x=test_points[0],
            data_y=test_points[1],
            base_dir=base,
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
            path = plot_landscapes(
                grids,
                figures_dir / f"landscape_{_slug(group)}.png",
                title=f"{group} and its LR variants: filter-normalized loss slices",
            )
            figures.append(
                Image(
                    path.relative_to(out),
                    f"Loss landscapes of {', '.join(names)} (first seed, first {x.shape[0]} "
                    f"test samples, {landscape_steps}×{landscape_steps} grid, shared colour scale).",
                )
            )

    blocks = _document(result, figures, landscape_steps if landscape_groups else 0)
    md_path = atomic_write_text(out / "report.md", render_markdown(blocks))
    html_path = atomic_write_text(
        out / "report.html", render_html(blocks, out, title=_title(result))
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


# ------------------------------------------------------------------------------------- contents


def _title(result: ExperimentResult) -> str:
    return (
        f"Reproduction: {result.experiment} ({result.profile} profile, {result.protocol} protocol)"
    )


def _num(value: float) -> str:
    return f"{value:.2f}"


def _delta(value: float) -> Cell:
    return (f"{value:+.2f}", "pos" if value >= 0 else "neg")


def _eps_text(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.4g}" for v in values)


def _notes(settings: dict[str, Any]) -> list[str]:
    """Every ``notes`` text of the settings (top level or in the profile), one per paragraph."""
    found: list[str] = []
    for source in (settings, settings.get("profile")):
        if isinstance(source, dict) and isinstance(source.get("notes"), str):
            found.extend(p.strip() for p in source["notes"].split("\n\n") if p.strip())
    # The runner writes the profile's notes both at the top level and inside the profile.
    return list(dict.fromkeys(found))


@dataclass(frozen=True)
class ReportContext:
    """What every section of the report is drawn from."""

    result: ExperimentResult
    figures: list[Image]
    landscape_steps: int  # grid points per axis of the loss landscapes; 0: none were drawn


#: A section of the report: its blocks, from the context (an empty list leaves it out).
Section: TypeAlias = Callable[[ReportContext], list[Block]]


def _document(result: ExperimentResult, figures: list[Image], landscape_steps: int) -> list[Block]:
    context = ReportContext(result, figures, landscape_steps)
    blocks: list[Block] = [Heading(1, _title(result))]
    for section in SECTIONS:
        blocks += section(context)
    return blocks


def _settings_section(context: ReportContext) -> list[Block]:
    result = context.result
    settings = result.settings
    profile = _mapping(settings.get("profile"))
    seeds = ", ".join(str(s) for s in result.seeds)
    facts = [
        f"Experiment: {result.experiment}; data set: {result.dataset}; model: {result.model}",
        f"Rows run: {len(result.rows)} ({', '.join(r.name for r in result.rows)}), each with "
        f"{_count(len(result.seeds), 'seed')} ({seeds})",
        f"Profile: {result.profile}",
        f"Protocol: {result.protocol}",
        f"FGSM ε grid in the units of the model's inputs: {_eps_text(result.eps)}",
        f"The same grid as the paper prints it: {_eps_text(result.eps_paper)}",
        f"LSA: attack {settings.get('lsa_attack', lsa_attack_key(result) or '—')}, η = {result.eta:g}",
        _time_text(result),
        _numerics_text(result),
        f"lsakit {result.lsakit_version}",
    ]
    if isinstance(settings.get("expected_runtime"), str) and settings["expected_runtime"]:
        facts.append(f"Expected runtime of this profile: {settings['expected_runtime']}")
    blocks: list[Block] = [Heading(2, "Settings")]
    description = settings.get("description")
    if isinstance(description, str) and description:
        narrowed = {k: profile[k] for k in ("base_methods", "proposals") if profile.get(k)}
        if narrowed:
            # The description is the whole experiment's; this run is a part of it.
            blocks.append(
                Paragraph(
                    f"The {result.profile} profile runs part of the experiment: "
                    + "; ".join(
                        f"{k.replace('_', ' ')} {', '.join(v)}" for k, v in narrowed.items()
                    )
                    + f". The whole experiment (other profiles): {description}"
                )
            )
        else:
            blocks.append(Paragraph(description))
    blocks.append(Bullets(facts))
    if isinstance(settings.get("protocol_description"), str) and settings["protocol_description"]:
        blocks.append(Paragraph(settings["protocol_description"]))  # starts with its name
    train = settings.get("train")
    if isinstance(train, dict) and train:
        blocks.append(
            Paragraph(f"Training settings of every row, as this run ({result.profile}) used them:")
        )
        blocks.append(
            Table(["setting", "value"], _merged_rows(train, profile.get("train"), result.profile))
        )
    methods = settings.get("methods")
    run_methods = {r.method for r in result.rows}
    if isinstance(methods, dict):
        extra = _mapping(profile.get("methods"))
        names = [m for m in dict.fromkeys([*methods, *extra]) if m in run_methods]
        rows: list[list[Cell]] = [
            [str(m), _value_text({**(methods.get(m) or {}), **(extra.get(m) or {})})] for m in names
        ]
        if rows:
            blocks.append(Paragraph("Per-method settings of the methods run:"))
            blocks.append(Table(["method", "settings"], rows))
    overrides: list[list[Cell]] = [
        [name, str(profile[key])]
        for key, name in [("test_limit", "test samples"), ("lsa_limit", "LSA samples")]
        if profile.get(key) is not None
    ]
    if overrides:
        blocks.append(Paragraph(f"Evaluation limits of the {result.profile} profile:"))
        blocks.append(Table(["scope", "value"], overrides))
    notes = _notes(settings)
    if notes:
        blocks.append(Paragraph("Notes on this profile:"))
        blocks.append(Bullets(notes))
    blocks.append(Code("All settings (JSON)", json.dumps(settings, indent=2, default=str)))
    return blocks


def _merged_rows(base: dict[str, Any], override: object, profile: str) -> list[list[Cell]]:
    """One row per setting: the profile's value where it sets one (the experiment's beside it)."""
    changed = override if isinstance(override, dict) else {}
    rows: list[list[Cell]] = []
    for key in dict.fromkeys([*base, *changed]):
        if key in changed and key in base and changed[key] != base[key]:
            text = f"{_value_text(changed[key])} ({profile} profile; the experiment: {_value_text(base[key])})"
        elif key in changed:
            text = f"{_value_text(changed[key])}" + ("" if key in base else f" ({profile} profile)")
        else:
            text = _value_text(base[key])
        rows.append([str(key), text])
    return rows


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _duration(seconds: float) -> str:
    """``42 s``, ``1 min 40 s``, ``2 h 5 min``."""
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _time_text(result: ExperimentResult) -> str:
    """The rows' own compute time, and what the invocation that wrote the results took."""
    runs = [run for row in result.rows for run in row.runs]
    trained = sum(run.seconds for run in runs)
    reused = (
        "runs finished earlier are reused, not retrained"
        if result.reused_runs is None
        else f"{result.reused_runs} of the runs were reused from an earlier invocation, not "
        f"retrained"
    )
    return (
        f"Compute time: the {_count(len(runs), 'run')} (row × seed) took {_duration(trained)} "
        f"(the sum of their recorded times, whichever invocation ran them); the invocation that "
        f"wrote these results took {_duration(result.seconds)} wall clock ({reused})"
    )


def _numerics_text(result: ExperimentResult) -> str:
    """How the runs computed (lsakit.numerics.describe() of each run), one entry per variant."""
    seen = [run.numerics for row in result.rows for run in row.runs if run.numerics]
    if not seen:
        return "Numerics: not recorded (results written before lsakit recorded them)"
    variants = dict.fromkeys(
        f"{n.get('mode')} (MKL {n.get('mkl') or '—'}, ATen {n.get('aten')}, oneDNN "
        f"{n.get('onednn')}), {_count(int(n.get('threads', 0)), 'thread')}, {n.get('cpu')}, "
        f"torch {n.get('torch')}"
        for n in seen
    )
    return "Numerics (lsakit.numerics): " + "; ".join(variants)


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _value_text(value: object) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def _table_section(context: ReportContext) -> list[Block]:
    result = context.result
    header = ["training", "R&G ours", "paper", "Δ"]
    groups: list[tuple[str, int]] = [("", 1), ("R&G", 3)]
    for ours, paper in zip(result.eps, result.eps_paper, strict=True):
        header += [f"ε={paper:g} ours", "paper", "Δ"]
        groups.append((f"ε = {paper:g} (ours {ours:.4g})", 3))
    html_header = ["training"] + ["ours", "paper", "Δ"] * (len(result.eps) + 1)
    rows: list[list[Cell]] = []
    for row in result.rows:
        published = row.published
        cells: list[Cell] = [row.name, mean_std(row.rg_mean, row.rg_std if row.varied else None)]
        if published is None:
            cells += ["—", "—"]
        else:
            cells += [_num(published.rg), _delta(row.rg_mean - published.rg)]
        for k, (mean, std) in enumerate(zip(row.mean, row.std, strict=True)):
            cells.append(mean_std(mean, std if row.varied else None))
            if published is None:
                cells += ["—", "—"]
            else:
                cells += [_num(published.accuracies[k]), _delta(mean - published.accuracies[k])]
        rows.append(cells)
    n = len(result.seeds)
    spread = (
        f"ours as mean ± sample std over {n} seeds"
        if n > 1
        else "ours from one seed (no ±: nothing varied)"
    )
    return [
        Heading(2, "Results beside the paper"),
        Paragraph(
            f"The R&G score (the sum of the FGSM accuracies over the ε grid, clean included; the "
            f"paper's headline number) first, then the FGSM accuracy (%) at each ε: {spread}, the "
            f"paper's published value, and Δ = ours − paper in percentage points. Rows in the "
            f"paper's order; — where the paper has no such row."
        ),
        Table(header, rows, groups=groups, html_header=html_header, css="results"),
    ]


def _lr_section(context: ReportContext) -> list[Block]:
    """Each LR row against its base: the comparison the paper's claims are about."""
    result = context.result
    lr_rows = [
        r for r in result.rows if r.base is not None and r.base in {x.name for x in result.rows}
    ]
    if not lr_rows:
        return []
    eps_paper = result.eps_paper
    last = len(result.eps) - 1
    header = [
        "LR row",
        "base",
        "ΔR&G ours",
        "ΔR&G paper",
        f"Δacc ε={eps_paper[last]:g} ours",
        "paper",
        "regularized layers",
        "RE there: base → LR",
    ]
    rows: list[list[Cell]] = []
    key = lsa_attack_key(result)
    for row in lr_rows:
        base = result.row(row.base or "")
        paper_rg: Cell = "—"
        paper_acc: Cell = "—"
        if row.published is not None and base.published is not None:
            paper_rg = _delta(row.published.rg - base.published.rg)
            paper_acc = _delta(row.published.accuracies[last] - base.published.accuracies[last])
        layers = row.resolved_layers or row.lr_layers or []
        rows.append(
            [
                row.name,
                base.name,
                _delta(row.rg_mean - base.rg_mean),
                paper_rg,
                _delta(row.mean[last] - base.mean[last]),
                paper_acc,
                ", ".join(layers) or "—",
                _re_change(result, base, row, layers),
            ]
        )
    return [
        Heading(2, "LR rows against their base"),
        Paragraph(
            "Differences LR − base (percentage points), ours (means over seeds) and the paper's; "
            f"the last column is the relative error under the LSA attack ({key or 'see settings'}) "
            "at each regularized layer, base → LR, and its relative change."
        ),
        Table(header, rows),
    ]


def _re_change(result: ExperimentResult, base: RowResult, row: RowResult, layers: list[str]) -> str:
    parts = []
    before, after = base.relative_errors_mean, row.relative_errors_mean
    for name in layers:
        if name not in result.layer_labels:
            continue
        k = result.layer_labels.index(name)
        b, a = before[k], after[k]
        if b is None or a is None:
            parts.append(f"{name}: undefined")
        elif b > 0:
            parts.append(f"{name}: {b:.3f} → {a:.3f} ({(a - b) / b:+.0%})")
        else:
            parts.append(f"{name}: {b:.3f} → {a:.3f}")
    return "; ".join(parts) or "—"


def _mvl_section(context: ReportContext) -> list[Block]:
    result = context.result
    mvl = ", ".join(result.mvl) if result.mvl else "(empty: no layer above the cut-off)"
    blocks: list[Block] = [
        Heading(2, "Most vulnerable layers of the normally trained model"),
        Paragraph(
            f"MVL list (Algorithm 1, η = {result.eta:g}: layers whose mean relative error exceeds "
            f"μ + η·σ): {mvl}. The MVL proposal rows regularize these layers."
        ),
    ]
    if result.normal_lsa:
        header = ["perturbation"] + [
            f"{label}*" if label in result.mvl else label for label in result.layer_labels
        ]
        rows: list[list[Cell]] = [
            [name, *("—" if v is None else f"{v:.3f}" for v in values)]
            for name, values in result.normal_lsa.items()
        ]
        blocks.append(
            Paragraph("Per-layer relative error of the normal model (mean over samples; * = MVL):")
        )
        blocks.append(Table(header, rows))
    return blocks


def _eps_reading(result: ExperimentResult) -> str:
    if result.eps == result.eps_paper:
        return (
            f"ε: the grid {_eps_text(result.eps)} is the paper's, used as published in the units "
            f"of the model's inputs (the {result.protocol} protocol: "
            + ("pixels in [0, 1])." if result.dataset != "moons" else "see its description).")
        )
    return (
        f"ε: lsakit takes inputs in [0, 1]; the grid {_eps_text(result.eps)} is the paper's "
        f"{_eps_text(result.eps_paper)} expressed in those units (identical where the paper's "
        "inputs were already in [0, 1]; for Moon the paper's raw coordinates are rescaled by one "
        "isotropic factor)."
    )


def _figures_section(context: ReportContext) -> list[Block]:
    return [Heading(2, "Figures"), *context.figures]


def _reading_section(context: ReportContext) -> list[Block]:
    result, landscape_steps = context.result, context.landscape_steps
    items = [
        "Accuracies are FGSM accuracies (%) on the test set; R&G (robustness and generalization) "
        "is their sum over the ε grid, clean included, as in the paper's tables.",
        "ours = mean ± sample standard deviation over the seeds (no ± for one seed); Δ = ours − paper "
        "in percentage points; Δ of a few points is within what seeds and unpublished training "
        "details (optimizer, epochs, training ε, γ) can explain.",
        _eps_reading(result),
        "Relative-error curves: 'before' is the normally trained model under the LSA attack, the "
        "other lines the trained rows under the same attack (mean over samples, averaged over "
        "seeds). The paper reports that the regularized layer's error drops to about 0 after AT-LR.",
        f"The MVL list comes from the normal model of the first seed with η = {result.eta:g} (the "
        "paper gives no η; it is a tuned cut-off).",
    ]
    if landscape_steps:
        items.append(
            "Loss landscapes: the paper does not say how its landscapes were drawn; these are "
            "filter-normalized 2-D slices (Li et al. 2018): two seeded Gaussian directions, each "
            "filter rescaled to the norm of the model's filter, biases and normalization "
            f"parameters not moved, α, β ∈ [−1, 1] on a {landscape_steps}×{landscape_steps} grid, "
            f"mean cross-entropy on the first {LANDSCAPE_SAMPLES} test samples, model in eval "
            "mode, first seed's checkpoint."
        )
    notes = _notes(result.settings)
    items += [f"Profile note: {note}" for note in notes]
    return [Heading(2, "How to read this / differences from the paper"), Bullets(items)]


#: The report's sections, in order; a section that has nothing to say returns no blocks.
SECTIONS: list[Section] = [
    _settings_section,
    _table_section,
    _lr_section,
    _mvl_section,
    _figures_section,
    _reading_section,
]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "row"


# ------------------------------------------------------------------------------------ rendering


def _md_text(text: str) -> str:
    # Results text is data, not markup: no raw HTML tag reaches the Markdown renderer. A bare
    # "&" is left alone so "R&G" stays readable in the raw file.
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _md_cell(cell: Cell) -> str:
    text = cell if isinstance(cell, str) else cell[0]
    return _md_text(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as GitHub-flavoured Markdown (figures linked by relative path)."""
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {_md_text(block.text)}")
        elif isinstance(block, Paragraph):
            parts.append(_md_text(block.text))
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {_md_text(item)}" for item in block.items))
        elif isinstance(block, Table):
            lines = [
                "| " + " | ".join(_md_cell(h) for h in block.header) + " |",
                "|" + "|".join("---" for _ in block.header) + "|",
            ]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            parts.append("\n".join(lines))
        elif isinstance(block, Image):
            parts.append(
                f"![{_md_cell(block.caption)}]({block.path.as_posix()})\n\n*{_md_text(block.caption)}*"
            )
        else:
            fence = "```"
            while fence in block.text:
                fence += "`"
            parts.append(
                f"<details><summary>{_md_text(block.summary)}</summary>\n\n{fence}json\n{block.text}\n{fence}\n\n</details>"
            )
    return "\n\n".join(parts) + "\n"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; display: block;
        max-width: 100%; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; vertical-align: top;
         overflow-wrap: anywhere; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
td.pos { color: #1a7f37; } td.neg { color: #c62828; }
table.results { font-size: 0.75em; font-variant-numeric: tabular-nums; }
table.results th, table.results td { padding: 0.15em 0.3em; overflow-wrap: normal; }
table.results td:first-child { white-space: nowrap; }
table.results tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
pre { background: #f6f6f6; padding: 0.8em; font-size: 0.8em; white-space: pre-wrap;
      overflow-wrap: anywhere; }
"""


def _html_cell(tag: str, cell: Cell, span: int = 1) -> str:
    text, css = (cell, "") if isinstance(cell, str) else cell
    attrs = f' class="{html.escape(css)}"' if css else ""
    attrs += f' colspan="{span}"' if span > 1 else ""
    # "mean ± std" may wrap in a narrow column, but only before the ±, never after it.
    return f"<{tag}{attrs}>{html.escape(text).replace('± ', '±&nbsp;')}</{tag}>"


def render_html(blocks: Sequence[Block], root: Path, *, title: str) -> str:
    """The blocks as one self-contained HTML page; figures (relative to ``root``) embedded."""
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Bullets):
            items = "".join(f"<li>{html.escape(item)}</li>" for item in block.items)
            body.append(f"<ul>{items}</ul>")
        elif isinstance(block, Table):
            css = f' class="{html.escape(block.css)}"' if block.css else ""
            head = ""
            if block.groups:
                head += "<tr>" + "".join(_html_cell("th", t, n) for t, n in block.groups) + "</tr>"
            names = block.html_header or block.header
            head += "<tr>" + "".join(_html_cell("th", h) for h in names) + "</tr>"
            rows = "".join(
                "<tr>" + "".join(_html_cell("td", c) for c in row) + "</tr>" for row in block.rows
            )
            body.append(f"<table{css}><thead>{head}</thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Image):
            encoded = base64.b64encode((root / block.path).read_bytes()).decode("ascii")
            caption = html.escape(block.caption)
            body.append(
                f'<figure><img src="data:image/png;base64,{encoded}" alt="{caption}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
        else:
            body.append(
                f"<details><summary>{html.escape(block.summary)}</summary>"
                f"<pre>{html.escape(block.text)}</pre></details>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
