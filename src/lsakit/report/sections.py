"""The sections of the reproduction report: what it says, as blocks (:mod:`lsakit.report.blocks`).

Each section is a function of the :class:`ReportContext` (the result, the figures drawn, the
landscapes' grid) returning its blocks; :data:`SECTIONS` lists them in order and
:func:`document` assembles the report: settings, our table beside the paper's, the LR rows
against their base, the normal model's MVL, the figures, and how to read it all.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from lsakit.experiments.results import ExperimentResult, RowResult, mean_std
from lsakit.report.blocks import Block, Bullets, Cell, Code, Heading, Image, Paragraph, Table
from lsakit.report.figures import lsa_attack_key

#: Test samples the loss landscapes are computed on (the first ones of the test split).
LANDSCAPE_SAMPLES = 256


def title(result: ExperimentResult) -> str:
    """The report's title (its first heading and the HTML page's title)."""
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


def document(result: ExperimentResult, figures: list[Image], landscape_steps: int) -> list[Block]:
    """The whole report: the title, then every section of :data:`SECTIONS` in order."""
    context = ReportContext(result, figures, landscape_steps)
    blocks: list[Block] = [Heading(1, title(result))]
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
