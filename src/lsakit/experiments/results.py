"""The results of a grid (``results.json``): a paper reproduction's rows × seeds beside the
published table (:class:`ExperimentResult`), or a companion-method study's (:class:`StudyResult`).

Written by :mod:`lsakit.experiments.reproduction` and :mod:`lsakit.experiments.studies`, read by
:mod:`lsakit.report`. Every number is what was measured; published numbers are copied from the
paper's tables (``tables/*.yaml``).
"""

from __future__ import annotations

import statistics
from typing import Any, ClassVar

from lsakit import __version__
from lsakit._frozen import FrozenModel
from lsakit._html import block, number, plural, table
from lsakit._results import JsonResult

RESULTS_FORMAT = 1


class PublishedRow(FrozenModel):
    """One row of the paper's table: FGSM accuracy (%) per ε and the R&G score."""

    accuracies: list[float]
    rg: float


class PublishedCurve(FrozenModel):
    """A per-layer curve the paper states: relative error per layer under one perturbation."""

    perturbation: str  # the perturbation's kind, e.g. "pgd"
    values: list[float]


class PublishedClaims(FrozenModel):
    """What the paper's text claims about an experiment (``claims`` in ``tables/*.yaml``)."""

    #: the normal model's relative error per layer (the "before" curve)
    normal_curve: PublishedCurve | None = None
    #: the MVL list / proposal the paper reads off the normal model
    mvl: list[str] | None = None
    #: the proposal of the paper's headline rows (Moon: L2 for every base; MNIST: L0)
    best_proposal: str | None = None


class RunResult(FrozenModel):
    """One seed of one row."""

    seed: int
    checkpoint: str
    accuracies: list[float]  # FGSM accuracy in % at each ε of the experiment's grid
    rg: float
    #: per-layer relative error (mean over samples) of this model under the LSA attack
    relative_errors: list[float | None]
    seconds: float
    #: how the run computed (lsakit.numerics.describe(): mode, each math library's path, threads,
    #: CPU); None: written before it was recorded
    numerics: dict[str, Any] | None = None


def mean_std(mean: float, std: float | None, *, digits: int = 2, sep: str = " ± ") -> str:
    """``mean ± std``, or the mean alone where nothing varied (``std`` None: one seed).

    The rule of every lsakit report (the reproduction tables, the studies, the terminal's
    tables, which pass ``sep="±"``): a ± is printed only where there was something to vary over.
    """
    return f"{mean:.{digits}f}" + ("" if std is None else f"{sep}{std:.{digits}f}")


class RowResult(FrozenModel):
    """A row of the table (a training variant) over its seeds."""

    name: str  # the paper's name, e.g. "AT-FGSM-LR-L2"
    method: str  # objective name: standard, fgsm, fast, pgd, trades, mart, apgd
    base: str | None  # the row this one regularizes (None for Normal and the base ATs)
    lr_layers: list[str] | None  # regularized layers as asked: ["L2"], ["mvl"], None
    resolved_layers: list[str] | None  # the layers actually regularized (MVL resolved)
    runs: list[RunResult]
    published: PublishedRow | None

    @property
    def varied(self) -> bool:
        """More than one seed: the stds mean something (one seed: reports print no ±)."""
        return len(self.runs) > 1

    @property
    def mean(self) -> list[float]:
        """Mean accuracy (%) per ε over the seeds."""
        return [statistics.fmean(a) for a in zip(*(r.accuracies for r in self.runs), strict=True)]

    @property
    def std(self) -> list[float]:
        """Sample std of the accuracy (%) per ε over the seeds (0 for a single seed)."""
        columns = zip(*(r.accuracies for r in self.runs), strict=True)
        return [statistics.stdev(a) if len(a) > 1 else 0.0 for a in columns]

    @property
    def rg_mean(self) -> float:
        return statistics.fmean(r.rg for r in self.runs)

    @property
    def rg_std(self) -> float:
        values = [r.rg for r in self.runs]
        return statistics.stdev(values) if len(values) > 1 else 0.0

    @property
    def relative_errors_mean(self) -> list[float | None]:
        """Per-layer relative error averaged over seeds (None where undefined in every seed)."""
        layers = zip(*(r.relative_errors for r in self.runs), strict=True)
        out: list[float | None] = []
        for values in layers:
            defined = [v for v in values if v is not None]
            out.append(statistics.fmean(defined) if defined else None)
        return out


class ExperimentResult(JsonResult):
    """A whole reproduction: the table, the settings, the LSA of the normal model, timings."""

    kind: ClassVar[str] = "a reproduction result"
    rewrite: ClassVar[str] = "re-run `lsakit reproduce` to rewrite it"
    result_format: ClassVar[int] = RESULTS_FORMAT

    format: int = RESULTS_FORMAT
    lsakit_version: str = __version__
    experiment: str  # moon, mnist, cifar10
    profile: str  # quick or full
    #: the conventions it ran under (Moon: strict or paper); results written before protocols
    #: existed ran under today's strict conventions
    protocol: str = "strict"
    dataset: str
    model: str
    eps: list[float]  # the FGSM grid, in lsakit's input units
    eps_paper: list[float]  # the same grid as the paper prints it
    seeds: list[int]
    layer_labels: list[str]
    #: LSA of the normally trained model (seed of the first run): per-layer relative error per
    #: perturbation, the MVL list and η — the "before" curves and the MVL proposal
    normal_lsa: dict[str, list[float | None]]
    mvl: list[str]
    eta: float
    rows: list[RowResult]
    settings: dict[str, Any]  # the resolved experiment config (training, attacks, profile notes)
    seconds: float
    #: the paper's claims about this experiment (copied from its table file; None: none stated)
    published_claims: PublishedClaims | None = None
    #: how many (row, seed) runs were reused from an earlier invocation (None: not recorded)
    reused_runs: int | None = None
    #: how the driver computed (the normal model's LSA); each run records its own
    #: (lsakit.numerics.describe()); None: written before it was recorded
    numerics: dict[str, Any] | None = None

    def row(self, name: str) -> RowResult:
        """The row called ``name`` (KeyError if absent).

        Args:
            name: the row's name as the paper prints it, e.g. ``"AT-FGSM-LR-L2"``.

        Returns:
            The first row of :attr:`rows` with that name.
        """
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(name)

    def __repr__(self) -> str:
        """Returns one line: the experiment, its profile and protocol, rows × seeds, the MVL."""
        return (
            f"ExperimentResult(experiment={self.experiment!r}, profile={self.profile!r}, "
            f"protocol={self.protocol!r}: {plural(len(self.rows), 'row')} × "
            f"{plural(len(self.seeds), 'seed')}, {plural(len(self.layer_labels), 'layer')}, "
            f"MVL {', '.join(self.mvl) or 'none'})"
        )

    def _repr_html_(self) -> str:
        """Returns Jupyter's display, the tables of ``lsakit reproduce``: FGSM accuracy (%) per ε
        and R&G per row, ours (paper), mean±std over seeds; the normal model's relative error
        per layer and perturbation, the MVL marked ``*``; each row's relative error per layer."""
        rows = []
        for row in self.rows:
            pub = row.published
            ours = [*zip(row.mean, row.std, strict=True), (row.rg_mean, row.rg_std)]
            paper = [*pub.accuracies, pub.rg] if pub else [None] * len(ours)
            rows.append(
                [row.name]
                + [mean_std(m, s if row.varied else None, digits=1, sep="±")
                   + ("" if p is None else f" ({p:.1f})")
                   for (m, s), p in zip(ours, paper, strict=True)]
            )  # fmt: skip
        accuracy = table(
            ["training", *(f"ε={e:g}" for e in self.eps_paper), "R&G"], rows,
            caption=f"{self.experiment} ({self.profile}, protocol {self.protocol}): "
            "FGSM accuracy %, ours (paper)",
        )  # fmt: skip
        lsa_rows = [
            [label + "*" * (label in self.mvl), *(number(v[i]) for v in self.normal_lsa.values())]
            for i, label in enumerate(self.layer_labels)
        ]
        marked = [i for i, label in enumerate(self.layer_labels) if label in self.mvl]
        lsa = table(
            ["layer", *self.normal_lsa], lsa_rows, marked=marked,
            caption=f"the normally trained model's relative error per layer; * MVL "
            f"(η = {self.eta:g})",
        )  # fmt: skip
        attack = self.settings.get("lsa_attack", "the LSA attack")
        errors = table(
            ["training", *self.layer_labels],
            [[row.name, *(number(v) for v in row.relative_errors_mean)] for row in self.rows],
            caption=f"relative error per layer under {attack} after training (mean over seeds)",
        )
        return block(accuracy, lsa, errors)


def percent_metric(key: str) -> bool:
    """Whether a study metric is an accuracy (a fraction shown in %), not a sparsity, k-NN overlap
    or Lipschitz quantity."""
    return key not in ("sparsity", "knn_overlap") and not key.startswith(("mu_F", "sigma_F", "ln "))


class StudyRun(FrozenModel):
    """One (row, seed) of a study: its metrics (fractions; ``±`` entries are stds over repeats)."""

    row: str
    seed: int
    metrics: dict[str, float]
    seconds: float
    checkpoint: str  # the evaluated checkpoint
    #: how the run computed (lsakit.numerics.describe()); None: written before it was recorded
    numerics: dict[str, Any] | None = None


class StudyResult(JsonResult):
    """A whole study: every run, and each row's metrics over its seeds."""

    kind: ClassVar[str] = "a study result"
    rewrite: ClassVar[str] = "re-run `lsakit study …` to rewrite it"

    format: int = 1
    lsakit_version: str = __version__
    study: str
    profile: str
    runs: list[StudyRun]
    #: row → metric → (mean, std); std None where nothing varied (one seed, deterministic model)
    summary: dict[str, dict[str, tuple[float, float | None]]]
    #: how the driver computed (lsakit.numerics.describe()); None: written before it was recorded
    numerics: dict[str, Any] | None = None
