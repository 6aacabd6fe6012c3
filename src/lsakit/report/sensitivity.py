"""Protocol sensitivity: does each claim of the paper hold under each protocol? (issue 12)

One experiment run under several protocols (``lsakit reproduce NAME --protocol all``: ``strict``
and ``paper``) gives one :class:`~lsakit.experiments.results.ExperimentResult` per protocol. For
each claim the paper makes about that experiment (its text, recorded under ``claims`` in
``tables/*.yaml``, and its table), :func:`claims` says whether it holds in each result, with the
numbers it was read from:

1. *LR beats its base at large ε*: for each base method, the paper's headline proposal (MNIST
   L0, Moon L2) against its base at the two largest ε of the grid; holds if higher at both, for
   every base.
2. *best proposal*: for each base, the proposal with the highest R&G; holds if it is the paper's
   for every base (needs more than one proposal in the run).
3. *MVL list of the normal model*: ours equals the paper's.
4. *the normal model's curve*: the relative error per layer under the paper's perturbation (PGD)
   changes with depth in the paper's direction (monotone, falling for MNIST, rising for Moon);
   where the protocol's LSA attack is another one (MNIST's paper protocol: FGSM), its curve is
   shown beside it.
5. *the regularized layer's relative error drops*: under the LSA attack, at each regularized
   layer of every LR row, below its base's.

"holds" is a plain reading of the claim on our means over seeds; the numbers beside it say by
how much, so a reader can apply a stricter reading (e.g. differences inside the seeds' spread).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lsakit._io import atomic_write_text
from lsakit.experiments.results import ExperimentResult
from lsakit.report.blocks import (
    Block,
    Heading,
    Paragraph,
    Table,
    render_html,
    render_markdown,
)
from lsakit.report.figures import PathLike, lsa_attack_key


@dataclass(frozen=True)
class Verdict:
    """One claim read in one result: whether it holds (None: cannot be read) and the numbers."""

    holds: bool | None
    evidence: str

    def text(self) -> str:
        word = {True: "holds", False: "does not hold", None: "not measured"}[self.holds]
        return f"{word}: {self.evidence}" if self.evidence else word


@dataclass(frozen=True)
class Claim:
    """A claim of the paper and its reading under each protocol."""

    name: str
    paper: str  # what the paper says, with its numbers
    verdicts: dict[str, Verdict]  # protocol → reading


def claims(results: Mapping[str, ExperimentResult]) -> list[Claim]:
    """The paper's claims about the experiment of ``results`` (protocol → result of one
    experiment), each read in every result."""
    if not results:
        raise ValueError("no results to compare")
    experiments = {r.experiment for r in results.values()}
    if len(experiments) != 1:
        raise ValueError(f"results of different experiments: {sorted(experiments)}")
    first = next(iter(results.values()))
    published = first.published_claims
    best = published.best_proposal if published else None
    out = [
        Claim(
            f"AT-…-LR-{best or '?'} beats its base at the two largest ε",
            _paper_large_eps(first, best),
            {p: _large_eps(r, best) for p, r in results.items()},
        ),
        Claim(
            f"{best or 'the paper’s proposal'} is the best proposal for every base (by R&G)",
            f"{best} for every base method" if best else "not stated",
            {p: _best_proposal(r, best) for p, r in results.items()},
        ),
        Claim(
            "MVL list of the normal model",
            ", ".join(published.mvl) if published and published.mvl else "not stated",
            {p: _mvl(r) for p, r in results.items()},
        ),
    ]
    curve = published.normal_curve if published else None
    if curve is not None:
        direction = "falls" if curve.values[-1] < curve.values[0] else "rises"
        out.append(
            Claim(
                f"the normal model's relative error {direction} with depth under "
                f"{curve.perturbation.upper()}",
                " / ".join(f"{v:.2f}" for v in curve.values),
                {p: _curve(r, curve.perturbation, curve.values) for p, r in results.items()},
            )
        )
    out.append(
        Claim(
            "the regularized layer's relative error drops (base → LR)",
            "to about 0 after AT-LR (Sec. 4, figures)",
            {p: _re_drop(r) for p, r in results.items()},
        )
    )
    return out


def _lr_pairs(result: ExperimentResult, proposal: str | None) -> list[tuple[str, str]]:
    """(LR row, base row) names for the proposal (every proposal when None)."""
    names = {r.name for r in result.rows}
    return [
        (r.name, r.base)
        for r in result.rows
        if r.base in names and (proposal is None or r.name.endswith(f"-LR-{proposal}"))
    ]


def _paper_large_eps(result: ExperimentResult, proposal: str | None) -> str:
    parts = []
    for lr, base in _lr_pairs(result, proposal):
        a, b = result.row(lr).published, result.row(base).published
        if a is not None and b is not None:
            deltas = [a.accuracies[k] - b.accuracies[k] for k in (-2, -1)]
            parts.append(f"{base} {' / '.join(f'{d:+.1f}' for d in deltas)}")
    eps = " and ".join(f"{e:g}" for e in result.eps_paper[-2:])
    return f"Δ at ε {eps}: " + "; ".join(parts) if parts else "not in the table"


def _large_eps(result: ExperimentResult, proposal: str | None) -> Verdict:
    pairs = _lr_pairs(result, proposal)
    if not pairs:
        return Verdict(None, f"no -LR-{proposal} row in this run")
    parts, beats = [], 0
    for lr, base in pairs:
        deltas = [result.row(lr).mean[k] - result.row(base).mean[k] for k in (-2, -1)]
        beats += all(d > 0 for d in deltas)
        parts.append(f"{base} {' / '.join(f'{d:+.1f}' for d in deltas)}")
    return Verdict(beats == len(pairs), f"{beats} of {len(pairs)} bases; " + "; ".join(parts))


def _best_proposal(result: ExperimentResult, proposal: str | None) -> Verdict:
    by_base: dict[str, list[tuple[float, str]]] = {}
    for lr, base in _lr_pairs(result, None):
        by_base.setdefault(base, []).append((result.row(lr).rg_mean, lr.rsplit("-LR-", 1)[1]))
    if not by_base or all(len(v) < 2 for v in by_base.values()):
        return Verdict(None, "one proposal per base in this run")
    winners = {base: max(options)[1] for base, options in by_base.items()}
    count = sum(w == proposal for w in winners.values())
    text = "; ".join(f"{base}: {w}" for base, w in winners.items())
    return Verdict(count == len(winners), f"{count} of {len(winners)} bases ({text})")


def _mvl(result: ExperimentResult) -> Verdict:
    published = result.published_claims
    ours = ", ".join(result.mvl) or "empty"
    if published is None or not published.mvl:
        return Verdict(None, ours)
    return Verdict(result.mvl == published.mvl, ours)


def _curve(result: ExperimentResult, perturbation: str, paper: Sequence[float]) -> Verdict:
    key = perturbation if perturbation in result.normal_lsa else None
    if key is None:
        return Verdict(None, f"no {perturbation} curve of the normal model")
    values = result.normal_lsa[key]
    if any(v is None for v in values) or len(values) != len(paper):
        return Verdict(None, f"{len(values)} layers with values {values}")
    ours = [float(v) for v in values if v is not None]
    falls = paper[-1] < paper[0]
    monotone = all((b < a) if falls else (b > a) for a, b in itertools.pairwise(ours))
    worst = max(abs(a - b) for a, b in zip(ours, paper, strict=True))
    evidence = " / ".join(f"{v:.2f}" for v in ours) + f" (max |Δ| {worst:.2f})"
    attack = lsa_attack_key(result)
    if attack is not None and attack != key:  # the protocol's own LSA attack, for comparison
        other = result.normal_lsa[attack]
        evidence += f"; {attack}: " + " / ".join("—" if v is None else f"{v:.2f}" for v in other)
    return Verdict(monotone, evidence)


def _re_drop(result: ExperimentResult) -> Verdict:
    key = lsa_attack_key(result)
    parts, drops, total = [], 0, 0
    for lr, base in _lr_pairs(result, None):
        row, base_row = result.row(lr), result.row(base)
        for layer in row.resolved_layers or row.lr_layers or []:
            if layer not in result.layer_labels:
                continue
            k = result.layer_labels.index(layer)
            b, a = base_row.relative_errors_mean[k], row.relative_errors_mean[k]
            if a is None or b is None:
                continue
            total += 1
            drops += a < b
            parts.append(f"{lr} {b:.2f}→{a:.2f}")
    if total == 0:
        return Verdict(None, "no regularized layer measured")
    return Verdict(
        drops == total, f"{drops} of {total} under {key or 'the LSA attack'}; " + "; ".join(parts)
    )


def sensitivity_blocks(results: Mapping[str, ExperimentResult]) -> list[Block]:
    """The protocol-sensitivity section: one table row per claim, one column per protocol."""
    found = claims(results)
    first = next(iter(results.values()))
    header = ["claim", "paper", *(f"under {p}" for p in results)]
    rows: list[list[str | tuple[str, str]]] = [
        [c.name, c.paper, *(c.verdicts[p].text() for p in results)] for c in found
    ]
    held = {p: sum(c.verdicts[p].holds is True for c in found) for p in results}
    summary = "; ".join(f"{p}: {n} of {len(found)} hold" for p, n in held.items())
    return [
        Heading(2, f"Protocol sensitivity ({first.experiment})"),
        Paragraph(
            "Each claim of the paper read under each protocol (means over seeds; the numbers are "
            f"what the reading is based on). {summary}."
        ),
        Table(header, rows),
    ]


def write_sensitivity_report(
    results: Mapping[str, ExperimentResult], out_dir: PathLike
) -> tuple[Path, Path]:
    """``sensitivity.md`` and ``sensitivity.html`` under ``out_dir``; returns their paths."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    blocks = sensitivity_blocks(results)
    md, page = root / "sensitivity.md", root / "sensitivity.html"
    atomic_write_text(md, render_markdown(blocks))
    first = next(iter(results.values()))
    atomic_write_text(
        page, render_html(blocks, root, title=f"{first.experiment}: protocol sensitivity")
    )
    return md, page
