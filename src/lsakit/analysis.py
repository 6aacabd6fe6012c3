"""Layer Sustainability Analysis (LSA): streaming statistics and the Most Vulnerable Layers list.

Khalooei, Homayounpour, Amirmazlaghani (2022), "Layer-wise regularized adversarial training using
layers sustainability analysis framework", arXiv:2202.02626, §3.

For each batch the clean representations φ_l(x) are captured once and shared by every
perturbation; each perturbation is generated with the probe paused (an attack's own forward passes
are not captured), then each of its representations φ_l(x̂) is compared with the clean one the
moment layer l runs (:meth:`LayerProbe.reducing`), and not kept. Statistics are merged batch by
batch (Chan et al.'s parallel mean/variance update, in float64 on the model's device), so memory
does not grow with the data set. With ``state_path`` the analysis is resumable
(:mod:`lsakit.analysis_state`).

Statistics (Eq. 12). With CM_{m,l} the measure of sample m at layer l (or of batch m when
``reduction="batch"``: then the unit of the statistics is a batch, as in the reference code):

    μ = 1/(M·L) Σ_m Σ_l CM_{m,l},    σ = sqrt(1/(M·L) Σ_m Σ_l (CM_{m,l} − μ)²)

Per layer, mean and std (population, 1/M) over the units. Undefined values (an all-zero clean
representation) are excluded from every statistic and counted per layer in ``undefined``.

Algorithm 1 (MVL): layer l is listed iff (CM_l − μ) > η·σ, CM_l the layer's mean; sorted by index.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

import torch
from pydantic import Field
from torch import nn

from lsakit import __version__, analysis_state, distributed
from lsakit._checks import check_inputs, check_labels
from lsakit._frozen import FrozenModel
from lsakit._html import mean_std, number, plural, table
from lsakit._outputs import OutputSelector, select_logits
from lsakit._progress import progress_bar
from lsakit._results import JsonResult
from lsakit._torch import eval_mode, model_device
from lsakit.config.defaults import DEFAULT_ETA as DEFAULT_ETA  # η of Algorithm 1
from lsakit.domain import UNIT, current_domain, follows_data_domain
from lsakit.errors import ConfigError, InputError, UndefinedMeasureError
from lsakit.measures import check_measure, check_reduction, compare, measure_rows
from lsakit.probe import LayerProbe, LayerSpec, describe_selection
from lsakit.validate import positive_int

#: Anything mapping (x, y) to a perturbed x of the same shape: noise, attacks, user functions.
PerturbationFn: TypeAlias = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

RESULT_FORMAT = 1


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
class LayerInfo(FrozenModel):
    """A monitored layer: its paper label (``L<k>``) and module name (``#k`` for reused modules)."""

    label: str
    module_name: str

    def __str__(self) -> str:
        return f"{self.label} ({self.module_name})"


class LayerStats(FrozenModel):
    """Mean and population std of the measure over the units (samples or batches) of one layer.

    ``mean``/``std`` are None when the measure was undefined for every unit (all-zero clean
    representation); ``undefined`` counts the units excluded for that reason.
    """

    label: str
    module_name: str
    mean: float | None
    std: float | None
    count: int
    undefined: int


class PerturbationResult(FrozenModel):
    """LSA statistics of one perturbation: per-layer values, μ and σ of Eq. 12, accuracy."""

    name: str
    adversarial: bool
    params: dict[str, Any]
    accuracy: float | None
    #: samples on which the attack's input gradient was exactly zero throughout (left unattacked;
    #: their small relative errors say nothing about robustness)
    zero_gradient_samples: int = 0
    mu: float | None
    sigma: float | None
    layers: list[LayerStats]

    def means(self) -> list[float | None]:
        """Per-layer mean measure, in forward order.

        Returns:
            One mean per monitored layer, in forward order; None for a layer whose measure was
            undefined for every unit.
        """
        return [layer.mean for layer in self.layers]


class LSAResult(JsonResult):
    """The outcome of :func:`analyze`; JSON round-trip with :meth:`save` / :meth:`load`."""

    kind: ClassVar[str] = "an LSA result"
    rewrite: ClassVar[str] = "re-run `lsakit analyze --out DIR` to rewrite it"
    result_format: ClassVar[int] = RESULT_FORMAT

    format: int = RESULT_FORMAT
    lsakit_version: str = __version__
    measure: str
    reduction: str
    n_samples: int
    clean_accuracy: float | None
    layers: list[LayerInfo]
    perturbations: list[PerturbationResult]
    #: the layer selection measured (probe.describe_selection: None = the default activations);
    #: pass it back as ``layers=`` to select the same representations
    selection: list[str] | None = None
    #: 0 when the selection captured activation functions (the default does: every call a
    #: function mode sees is a representation); None for selections of modules only. Older
    #: results counted the function calls they could not measure here.
    invisible_activation_calls: int | None = None
    #: the declared input domain the analysis ran in (InputDomain.to_json; [0, 1] by default)
    input_domain: dict[str, Any] = Field(default_factory=lambda: UNIT.to_json())
    meta: dict[str, Any] = Field(default_factory=dict)

    # -- lookup ---------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Names of the perturbations, in analysis order.

        Returns:
            The perturbations' names, in the order they were analysed.
        """
        return [p.name for p in self.perturbations]

    def perturbation(self, name: str | None = None) -> PerturbationResult:
        """The result of perturbation ``name``; may be omitted when there is only one.

        Args:
            name: the perturbation's name (see :meth:`names`); None when the result holds
                exactly one perturbation (a :class:`~lsakit.errors.ConfigError` otherwise).

        Returns:
            That perturbation's :class:`PerturbationResult`.
        """
        if name is None:
            if len(self.perturbations) == 1:
                return self.perturbations[0]
            raise ConfigError(
                f"this result has {len(self.perturbations)} perturbations; say which one: "
                f"{', '.join(self.names())}"
            )
        for p in self.perturbations:
            if p.name == name:
                return p
        raise ConfigError(
            f"no perturbation {name!r} in this result; it has {', '.join(self.names())}"
        )

    # -- Algorithm 1 ----------------------------------------------------------------------------
    def most_vulnerable_layers(
        self, eta: float = DEFAULT_ETA, perturbation: str | None = None
    ) -> list[LayerInfo]:
        """Algorithm 1: layers l with (CM_l − μ) > η·σ, sorted by layer index.

        Layers whose measure was undefined everywhere are never listed.

        Args:
            eta: η, the threshold in units of σ (finite; may be negative or zero).
            perturbation: the perturbation whose statistics are used; may be omitted when the
                result holds only one (see :meth:`perturbation`).

        Returns:
            The Most Vulnerable Layers, sorted by layer index; empty when μ or σ is undefined.
        """
        eta = _check_eta(eta)
        p = self.perturbation(perturbation)
        if p.mu is None or p.sigma is None:
            return []
        mu, sigma = p.mu, p.sigma
        return [
            self.layers[i]
            for i, layer in enumerate(p.layers)
            if layer.mean is not None and layer.mean - mu > eta * sigma
        ]

    def top_k_layers(self, k: int, perturbation: str | None = None) -> list[LayerInfo]:
        """The k layers with the largest mean measure, returned sorted by layer index.

        Args:
            k: how many layers (≥ 1); fewer are returned when fewer layers have a defined mean.
            perturbation: the perturbation whose statistics are used; may be omitted when the
                result holds only one (see :meth:`perturbation`).

        Returns:
            Up to ``k`` layers with the largest means (ties to the lower index), sorted by layer
            index; layers whose measure was undefined everywhere are never returned.
        """
        positive_int(k, "k")
        p = self.perturbation(perturbation)
        ranked = sorted(
            (i for i, layer in enumerate(p.layers) if layer.mean is not None),
            key=lambda i: -(p.layers[i].mean or 0.0),
        )
        return [self.layers[i] for i in sorted(ranked[:k])]

    # -- display --------------------------------------------------------------------------------
    def __repr__(self) -> str:
        """Returns one line: the measure, layers, perturbations, samples and clean accuracy."""
        acc = "" if self.clean_accuracy is None else f", clean accuracy {self.clean_accuracy:.3f}"
        return (f"LSAResult(measure={self.measure!r}, {plural(len(self.layers), 'layer')}, "
                f"{plural(len(self.perturbations), 'perturbation')}: {', '.join(self.names())}; "
                f"{plural(self.n_samples, 'sample')}{acc})")  # fmt: skip

    def _repr_html_(self) -> str:
        """Returns Jupyter's display, ``lsakit analyze``'s table: each layer's mean±std per
        perturbation, then μ, σ and accuracy; the layers of ``meta["mvl"]`` marked ``*``."""
        mvl = self.meta.get("mvl") or {}
        marked = [i for i, la in enumerate(self.layers) if la.label in mvl.get("layers", ())]
        ps = self.perturbations
        cells = [[mean_std(s.mean, s.std, "all-zero clean") for s in p.layers] for p in ps]
        rows = [[la.label + "*" * (i in marked), la.module_name, *(c[i] for c in cells)]
                for i, la in enumerate(self.layers)]  # fmt: skip
        foot = [["μ", "", *(number(p.mu) for p in ps)], ["σ", "", *(number(p.sigma) for p in ps)],
                ["acc", f"clean {number(self.clean_accuracy)}", *(number(p.accuracy) for p in ps)]]  # fmt: skip
        note = f"; * MVL (η = {mvl.get('eta')}, from {mvl.get('perturbation')})" if marked else ""
        unit = "batches" if self.reduction == "batch" else "samples"
        caption = f"{self.measure} per layer (mean ± std over {unit}){note}"
        return table(["layer", "module", *self.names()], rows, caption=caption, foot=foot,
                     marked=marked, text_columns=2)  # fmt: skip


def _check_eta(eta: float) -> float:
    try:
        value = float(eta)
    except (TypeError, ValueError):
        raise ConfigError(f"eta must be a number, got {eta!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"eta must be finite, got {eta!r}")
    return value


# --------------------------------------------------------------------------------------------
# Streaming statistics
# --------------------------------------------------------------------------------------------
@dataclass
class RunningStats:
    """Per-layer count, mean and sum of squared deviations (M2), merged batch by batch.

    Chan, Golub & LeVeque's pairwise update, in float64; ``merge`` takes masked values so that
    undefined entries are excluded without a Python loop over samples.
    """

    n_layers: int
    device: torch.device
    count: torch.Tensor = field(init=False)
    mean: torch.Tensor = field(init=False)
    m2: torch.Tensor = field(init=False)
    undefined: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        zeros = torch.zeros(self.n_layers, dtype=torch.float64, device=self.device)
        self.count, self.mean, self.m2, self.undefined = (zeros.clone() for _ in range(4))

    def merge(self, values: torch.Tensor, defined: torch.Tensor) -> None:
        """Merge values of shape (layers, units) with a boolean mask of the same shape."""
        v = values.to(torch.float64)
        mask = defined.to(torch.float64)
        n_b = mask.sum(dim=1)
        mean_b = (v * mask).sum(dim=1) / n_b.clamp(min=1)
        m2_b = ((v - mean_b[:, None]).pow(2) * mask).sum(dim=1)
        self._merge_moments(n_b, mean_b, m2_b)
        self.undefined = self.undefined + (1 - mask).sum(dim=1)

    def _merge_moments(self, n_b: torch.Tensor, mean_b: torch.Tensor, m2_b: torch.Tensor) -> None:
        """Chan et al.'s pairwise update with another set's (count, mean, M2) per layer."""
        n = self.count + n_b
        delta = mean_b - self.mean
        safe_n = n.clamp(min=1)
        self.mean = self.mean + delta * n_b / safe_n
        self.m2 = self.m2 + m2_b + delta.pow(2) * self.count * n_b / safe_n
        self.count = n

    def state(self) -> list[list[float]]:
        """(count, mean, M2, undefined) per layer as plain floats, e.g. to send to other ranks."""
        return [t.tolist() for t in (self.count, self.mean, self.m2, self.undefined)]

    def restore(self, state: list[list[float]]) -> None:
        """Set the totals to a :meth:`state` exactly (a resumed analysis)."""
        self.count, self.mean, self.m2, self.undefined = (
            torch.tensor(v, dtype=torch.float64, device=self.device) for v in state
        )

    def combine(self, state: list[list[float]]) -> None:
        """Merge another :class:`RunningStats`' :meth:`state` (e.g. another rank's), exactly as
        batches are merged: merging shards gives the statistics of their union."""
        count, mean, m2, undefined = (
            torch.tensor(v, dtype=torch.float64, device=self.device) for v in state
        )
        self._merge_moments(count, mean, m2)
        self.undefined = self.undefined + undefined

    def layer_stats(self) -> list[tuple[float | None, float | None, int, int]]:
        """(mean, population std, count, undefined) per layer; None where nothing was defined."""
        out: list[tuple[float | None, float | None, int, int]] = []
        for n, mean, m2, undef in zip(
            self.count.tolist(),
            self.mean.tolist(),
            self.m2.tolist(),
            self.undefined.tolist(),
            strict=True,
        ):
            if n == 0:
                out.append((None, None, 0, int(undef)))
            else:
                out.append((mean, (max(m2, 0.0) / n) ** 0.5, int(n), int(undef)))
        return out

    def overall(self) -> tuple[float | None, float | None]:
        """μ and σ over every (unit, layer) value (Eq. 12), by merging the layers."""
        n = self.count.sum()
        if float(n) == 0:
            return None, None
        mu = (self.count * self.mean).sum() / n
        m2 = self.m2.sum() + (self.count * (self.mean - mu).pow(2)).sum()
        return float(mu), float((m2.clamp(min=0) / n).sqrt())


# --------------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------------
class _Run:
    """The running totals of one analysis (this rank's): what its state file holds."""

    def __init__(self, names: list[str], device: torch.device) -> None:
        self.names, self.device = names, device
        self.stats: dict[str, RunningStats] = {}
        self.correct = dict.fromkeys(["", *names], 0)
        self.zero_gradient = dict.fromkeys(names, 0)
        self.n_samples = 0
        self.done = 0  # this rank's completed batches
        self.layer_infos: list[LayerInfo] = []
        self.invisible: int | None = None

    def start(self, layers: list[Any], path: Any) -> None:
        """After a batch's clean forward: the layers of the first batch, or a check that the
        layers are those of the run this one resumes."""
        infos = [LayerInfo(label=la.label, module_name=la.name) for la in layers]
        if not self.stats:
            self.layer_infos = infos
            self.stats = {n: RunningStats(len(infos), self.device) for n in self.names}
        elif infos != self.layer_infos:
            raise ConfigError(
                f"the model captures other layers than the analysis in {path} measured "
                f"({len(infos)} vs {len(self.layer_infos)}); delete the state to start afresh"
            )

    def state(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "n_samples": self.n_samples,
            "correct": self.correct,
            "zero_gradient": self.zero_gradient,
            "invisible": self.invisible,
            "layers": [info.model_dump() for info in self.layer_infos],
            "stats": {name: s.state() for name, s in self.stats.items()},
        }

    def restore(self, saved: dict[str, Any]) -> None:
        self.done, self.n_samples = int(saved["done"]), int(saved["n_samples"])
        self.correct = {k: int(v) for k, v in saved["correct"].items()}
        self.zero_gradient = {k: int(v) for k, v in saved["zero_gradient"].items()}
        self.invisible = saved["invisible"]
        self.layer_infos = [LayerInfo(**info) for info in saved["layers"]]
        for name, state in saved["stats"].items():
            self.stats[name] = RunningStats(len(self.layer_infos), self.device)
            self.stats[name].restore(state)


def _perturbation_info(name: str, fn: PerturbationFn) -> tuple[bool, dict[str, Any]]:
    adversarial = bool(getattr(fn, "is_adversarial", False))
    params_fn = getattr(fn, "params", None)
    params = dict(params_fn()) if callable(params_fn) else {}
    return adversarial, params


@follows_data_domain
def analyze(
    model: nn.Module,
    data: Iterable[tuple[torch.Tensor, torch.Tensor]],
    perturbations: Mapping[str, PerturbationFn],
    *,
    layers: LayerSpec = None,
    measure: str = "relative_error",
    reduction: str = "sample",
    output: OutputSelector = None,
    max_batches: int | None = None,
    progress: bool = False,
    meta: Mapping[str, Any] | None = None,
    state_path: str | os.PathLike[str] | None = None,
) -> LSAResult:
    """Run LSA over ``data`` for every perturbation and return the streaming statistics.

    Args:
        model: the network; it runs in eval mode and its modes are restored afterwards.
        data: an iterable of ``(x, y)`` batches (e.g. a DataLoader), x in the declared input
            domain ([0, 1] by default; a registry loader declares its own, see
            :mod:`lsakit.domain`).
        perturbations: name → callable ``(x, y) -> x̂`` (``lsakit.perturb`` objects or your own).
        layers: which layers to monitor (see :class:`~lsakit.probe.LayerProbe`).
        measure: ``relative_error`` (default, the paper's), ``mse``, ``cosine_distance``, ``linf``.
        reduction: ``"sample"`` (default: statistics over samples, Eq. 12) or ``"batch"`` (one
            value per batch over the whole batch tensor, as the reference code plots).
        output: where the logits are in the model's output (tuple/dict outputs).
        max_batches: stop after this many batches.
        progress: show a progress bar.
        meta: extra JSON-able information stored in the result (model name, data set, …).
        state_path: a file that makes the analysis resumable: rewritten atomically after every
            batch with the statistics and the random state, and, when it exists at the start,
            continued from its last completed batch, giving exactly the result of an
            uninterrupted run (:mod:`lsakit.analysis_state`; under torchrun each rank keeps
            ``NAME.rank<k>``). ``data`` must yield the same batches again. Delete the file to
            start afresh.

    Returns:
        The :class:`LSAResult`: per perturbation, the per-layer statistics, μ, σ and accuracy.
    """
    check_measure(measure)
    if check_reduction(reduction) == "none":
        raise ConfigError("analyze() needs reduction 'sample' or 'batch', not 'none'")
    if not perturbations:
        raise ConfigError("analyze() needs at least one perturbation, e.g. {'gaussian': ...}")
    if max_batches is not None:
        positive_int(max_batches, "max_batches")
    device = model_device(model)
    # Under torchrun each rank takes every world-th batch; the sums are merged after the loop.
    distributed.init(device)
    distributed.diverge_global_seed()
    ranks = distributed.world_size()
    names = list(perturbations)
    run = _Run(names, device)
    path = None if state_path is None else analysis_state.rank_path(state_path)
    if path is not None:
        settings = analysis_state.settings(
            model,
            {n: _perturbation_info(n, perturbations[n]) for n in names},
            measure=measure,
            reduction=reduction,
            selection=describe_selection(layers),
            max_batches=max_batches,
        )
        saved = analysis_state.load(path, settings) if path.exists() else None
        if saved is not None:
            run.restore(saved)
    batches = distributed.shard_batches(data, max_batches, skip=run.done)
    if path is not None and saved is not None:  # after the loader drew its seed, as before
        analysis_state.restore_random_state(saved["random"], dict(perturbations))
    with (
        progress_bar(data, max_batches, progress and distributed.is_main_process(), "LSA") as step,
        eval_mode(model),
        LayerProbe(model, layers) as probe,
    ):
        for _ in range(run.done * ranks):
            step()
        for x_batch, y_batch in batches:
            x = check_inputs(x_batch).to(device)
            with torch.no_grad():
                logits = select_logits(model(x), output)
            clean = probe.take()
            y = check_labels(y_batch, x.shape[0], num_classes=logits.shape[1]).to(device)
            run.start(probe.layers, path)

            def compare_with_clean(k: int, rep: torch.Tensor, clean: list[Any] = clean) -> Any:
                """Layer k of a perturbed forward, compared the moment it runs (not kept)."""
                if k >= len(clean):
                    raise InputError(
                        f"a perturbed forward captured more layers than the clean one ({len(clean)})"
                    )
                values, defined = measure_rows(measure, clean[k], rep, reduction)
                return torch.stack((values.to(torch.float64), defined.to(torch.float64)))

            run.correct[""] += int((logits.argmax(dim=1) == y).sum())
            for name in names:
                with probe.paused():
                    x_pert = perturbations[name](x, y)
                _check_perturbed(name, x, x_pert)
                run.zero_gradient[name] += int(
                    getattr(perturbations[name], "last_zero_gradient", 0)
                )
                with torch.no_grad(), probe.reducing(compare_with_clean):
                    logits_pert = select_logits(model(x_pert), output)
                rows = probe.take()  # per layer (the clean forward's): two float64 rows
                run.stats[name].merge(
                    torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows]).bool()
                )
                run.correct[name] += int((logits_pert.argmax(dim=1) == y).sum())
            clean.clear()  # freed before the next batch's clean forward, not after it
            del x_pert, logits_pert, logits
            run.n_samples += x.shape[0]
            run.done += 1
            if probe.invisible_activation_calls is not None:
                run.invisible = probe.invisible_activation_calls
            if path is not None:
                analysis_state.save(
                    path,
                    {
                        "settings": settings,
                        **run.state(),
                        "random": analysis_state.random_state(dict(perturbations)),
                    },
                )
            for _ in range(ranks):  # the other ranks' batches advance at about the same pace
                step()
    layer_infos, stats, correct = run.layer_infos, run.stats, run.correct
    zero_gradient, n_samples, invisible = run.zero_gradient, run.n_samples, run.invisible
    if distributed.is_distributed():
        layer_infos, stats, n_samples = _merge_ranks(
            layer_infos, stats, correct, n_samples, device, names
        )
    if n_samples == 0:
        raise InputError("the data yielded no batch; check the data set, split and limit")

    results = []
    for name in names:
        adversarial, params = _perturbation_info(name, perturbations[name])
        mu, sigma = stats[name].overall()
        layer_stats = [
            LayerStats(
                label=info.label, module_name=info.module_name, mean=m, std=s, count=c, undefined=u
            )
            for info, (m, s, c, u) in zip(layer_infos, stats[name].layer_stats(), strict=True)
        ]
        results.append(
            PerturbationResult(
                name=name,
                adversarial=adversarial,
                params=params,
                accuracy=correct[name] / n_samples,
                zero_gradient_samples=zero_gradient[name],
                mu=mu,
                sigma=sigma,
                layers=layer_stats,
            )
        )
    return LSAResult(
        measure=measure,
        reduction=reduction,
        n_samples=n_samples,
        clean_accuracy=correct[""] / n_samples,
        layers=layer_infos,
        perturbations=results,
        input_domain=current_domain().to_json(),
        selection=describe_selection(layers),
        invisible_activation_calls=invisible,
        meta=dict(meta or {}),
    )


def _merge_ranks(
    layer_infos: list[LayerInfo],
    stats: dict[str, RunningStats],
    correct: dict[str, int],
    n_samples: int,
    device: torch.device,
    names: list[str],
) -> tuple[list[LayerInfo], dict[str, RunningStats], int]:
    """Every rank's statistics merged in rank order (Chan's update; counts summed).

    ``correct`` is updated in place. A rank that got no batch contributes nothing.
    """
    mine = (
        [info.model_dump() for info in layer_infos],
        {name: s.state() for name, s in stats.items()},
        dict(correct),
        n_samples,
    )
    gathered = distributed.all_gather_objects(mine)
    infos = next((g[0] for g in gathered if g[0]), [])
    merged: dict[str, RunningStats] = {}
    for name in list(correct):
        correct[name] = 0
    total = 0
    for _, states, counts, n in gathered:
        for name, state in states.items():
            merged.setdefault(name, RunningStats(len(infos), device)).combine(state)
        for name, count in counts.items():
            correct[name] += count
        total += n
    for name in names:  # no rank got a batch: the caller reports the empty data
        merged.setdefault(name, RunningStats(len(infos), device))
    return [LayerInfo(**info) for info in infos], merged, total


def _check_perturbed(name: str, x: torch.Tensor, x_pert: object) -> None:
    if not isinstance(x_pert, torch.Tensor) or x_pert.shape != x.shape:
        shape = tuple(x_pert.shape) if isinstance(x_pert, torch.Tensor) else type(x_pert).__name__
        raise InputError(
            f"perturbation {name!r} returned {shape} for a batch of shape {tuple(x.shape)}; "
            f"a perturbation must return a tensor of the input's shape"
        )


def relative_errors(
    model: nn.Module,
    x_clean: torch.Tensor,
    x_perturbed: torch.Tensor,
    *,
    reduction: str = "batch",
    layers: LayerSpec = None,
    measure: str = "relative_error",
) -> list[float]:
    """The measure (default: relative error, Eq. 11) of every monitored layer, in forward order.

    With ``reduction="batch"`` this is exactly ‖φ_l(x) − φ_l(x̂)‖_F / ‖φ_l(x)‖_F with one Frobenius
    norm over the whole batch tensor, as in the paper. The model runs in eval mode (restored after).
    Raises UndefinedMeasureError for a layer whose clean representation is all zero.

    Args:
        model: the network; it runs on its own device, in eval mode.
        x_clean: the clean batch, ``(N, …)`` in the input domain.
        x_perturbed: the same batch perturbed, shaped like ``x_clean``.
        reduction: ``"batch"`` (default: one value over the whole batch tensor, as in the paper)
            or ``"sample"`` (the measure of each sample, averaged over the batch).
        layers: which layers to monitor (see :class:`~lsakit.probe.LayerProbe`).
        measure: ``relative_error`` (default, the paper's), ``mse``, ``cosine_distance``, ``linf``.

    Returns:
        One value of the measure per monitored layer, in forward order.
    """
    check_inputs(x_clean, "x_clean")
    check_inputs(x_perturbed, "x_perturbed")
    if x_clean.shape != x_perturbed.shape:
        raise InputError(
            f"x_clean {tuple(x_clean.shape)} and x_perturbed {tuple(x_perturbed.shape)} differ in "
            f"shape; pass the same batch clean and perturbed"
        )
    if reduction not in ("batch", "sample"):
        raise ConfigError(f"reduction must be 'batch' or 'sample', got {reduction!r}")
    device = model_device(model)
    with torch.no_grad(), eval_mode(model), LayerProbe(model, layers) as probe:
        model(x_clean.to(device))
        clean = probe.take()
        model(x_perturbed.to(device))
        perturbed = probe.take()
        labels = [layer.label for layer in probe.layers]
    values = []
    for label, c, p in zip(labels, clean, perturbed, strict=True):
        try:
            values.append(
                float(compare(measure, c, p, "batch" if reduction == "batch" else "sample"))
            )
        except UndefinedMeasureError as e:
            raise UndefinedMeasureError(f"layer {label}: {e}") from None
    return values
