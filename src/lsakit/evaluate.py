"""The paper's robustness protocol: FGSM accuracy over an ε sweep, the R&G score, and attacks.

Khalooei, Homayounpour, Amirmazlaghani (2022), arXiv:2202.02626, Tables 2–4: every model is
scored by its accuracy under FGSM (Goodfellow et al., 2015, Eq. 3) at each ε of a fixed grid,
ε = 0 (clean) included, and by the "R&G score", the sum of those accuracies in percent.

    R&G = Σ_{ε ∈ grid} 100 · acc_FGSM(ε)        (e.g. Table 2, Normal: 97.07 + … + 52.35 = 466.17)

FGSM's direction sign(∇ₓJ(θ, x, y)) does not depend on ε, so :func:`fgsm_sweep` takes ONE input
gradient per batch and reuses it for every ε (one no-grad forward per ε); the result is exactly
what running :class:`~lsakit.perturb.FGSM` separately at each ε gives.

Stronger attacks (PGD-k, APGD) are scored by :func:`robust_accuracy`, following AutoAttack's
practice (Croce & Hein, 2020): a sample misclassified on its clean input counts as an error and is
not attacked. The FGSM sweep, as in the paper, is plain accuracy on x̂ for every sample.

Everything streams over the batches of ``data`` (nothing of the data set is kept), runs with the
model in eval mode (each submodule's own mode restored afterwards) on the model's device.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, TypeAlias

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from lsakit import __version__, distributed
from lsakit._checks import check_inputs, check_labels, check_nonnegative
from lsakit._frozen import FrozenModel
from lsakit._html import plural, table
from lsakit._outputs import OutputSelector, select_logits
from lsakit._progress import progress_bar
from lsakit._results import JsonResult
from lsakit._torch import eval_mode, model_device
from lsakit.domain import UNIT, current_domain, follows_data_domain
from lsakit.errors import ConfigError, InputError
from lsakit.perturb.fgsm import FGSM
from lsakit.validate import positive_int

__all__ = [
    "DEFAULT_FGSM_EPS",
    "PAPER_EPS",
    "AttackResult",
    "EvaluationResult",
    "SweepPoint",
    "evaluate",
    "fgsm_sweep",
    "paper_eps",
    "rg_score",
    "robust_accuracy",
]

#: An attack (or any perturbation): ``(x, y) -> x̂`` of x's shape, e.g. ``lsakit.perturb.PGD``.
AttackFn: TypeAlias = Callable[[Tensor, Tensor], Tensor]

RESULT_FORMAT = 1

#: The ε grids of the paper's tables (Tables 2–4), exactly as published. MNIST, Fashion-MNIST
#: and CIFAR-10 are in [0, 1] pixel units, i.e. lsakit's units. Moon's grid is in the raw
#: ``make_moons`` coordinates the paper used: convert it with :func:`paper_eps`.
PAPER_EPS: dict[str, tuple[float, ...]] = {
    "moons": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
    "mnist": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
    "fashion-mnist": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5),
    "cifar10": (0.0, 0.01, 0.03, 0.1, 0.2),
}

#: The sweep of :func:`evaluate` when none is given: the MNIST grid (already in lsakit's units).
DEFAULT_FGSM_EPS: tuple[float, ...] = PAPER_EPS["mnist"]

_ALIASES = {"moon": "moons", "fmnist": "fashion-mnist", "cifar-10": "cifar10"}


def paper_eps(
    dataset: str, *, moons_scale: float | None = None, coordinates: str = "unit"
) -> tuple[float, ...]:
    """The paper's FGSM ε grid for ``dataset``, in the units of lsakit's inputs.

    MNIST, Fashion-MNIST and CIFAR-10: the published grid unchanged (pixels in [0, 1] in both).

    Moon: the paper does not say in which coordinates its ε are, so it depends on the
    ``coordinates`` of the moons data (:mod:`lsakit.data.moons`) *(inferred)*:

    - ``unit`` (the default, the ``strict`` protocol): the ε are read as raw
      ``sklearn.datasets.make_moons`` coordinates; lsakit maps moons into [0, 1] with one isotropic
      scale, under which the L∞ ball of radius ε_raw is exactly the ball of radius ε_raw / scale,
      so each ε is divided by ``moons_scale`` (default: :func:`lsakit.data.moons_scale` of the
      default data set, ≈ 3.4; pass the scale of the data you evaluate on if you generated it with
      other options);
    - ``standardized`` (the ``paper`` protocol: the convention that fits the published Normal row,
      ``benchmarks/exp_moon_protocol.py``) and ``raw``: the published ε are used directly, in
      z-score units or raw coordinates respectively.

    Args:
        dataset: ``moons``, ``mnist``, ``fashion-mnist`` or ``cifar10`` (case, ``_`` for ``-``
            and the aliases ``moon``, ``fmnist``, ``cifar-10`` accepted).
        moons_scale: Moon with ``unit`` coordinates only: the raw length of one unit coordinate
            (> 0), by which each ε is divided; None → the scale of the default moons data set.
        coordinates: Moon only: ``unit`` (default), ``standardized`` or ``raw``, as above; other
            data sets accept only ``unit``.

    Returns:
        The ε grid in order, ε = 0 first, in the units of lsakit's inputs.
    """
    if not isinstance(dataset, str):
        raise ConfigError(f"dataset must be a string, got {dataset!r}")
    key = dataset.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in PAPER_EPS:
        raise ConfigError(
            f"the paper has no ε grid for data set {dataset!r}; known: {', '.join(PAPER_EPS)} "
            f"(or give the grid yourself)"
        )
    grid = PAPER_EPS[key]
    if key != "moons":
        if moons_scale is not None or coordinates != "unit":
            raise ConfigError(
                f"moons_scale and coordinates apply to the moons grid only, not to {key!r}"
            )
        return grid
    if coordinates not in ("unit", "standardized", "raw"):
        raise ConfigError(
            f"coordinates must be one of unit, standardized, raw; got {coordinates!r}"
        )
    if coordinates != "unit":
        if moons_scale is not None:
            raise ConfigError("moons_scale applies to unit coordinates only")
        return grid
    if moons_scale is None:
        from lsakit.data.moons import moons_scale as default_scale

        scale = default_scale()
    else:
        scale = check_nonnegative(moons_scale, "moons_scale")
        if scale == 0:
            raise ConfigError("moons_scale must be > 0 (raw length of one unit coordinate)")
    return tuple(eps / scale for eps in grid)


def rg_score(accuracies: Mapping[float, float]) -> float:
    """The paper's R&G score: Σ over the sweep of the FGSM accuracies, in percent, clean included.

    ``accuracies`` maps ε to an accuracy fraction in [0, 1] (as :func:`fgsm_sweep` returns), so
    a sweep of six perfect accuracies scores 600. Summed with :func:`math.fsum` (exact rounding).

    Args:
        accuracies: ε → FGSM accuracy, a fraction in [0, 1] (not a percentage), at least one.

    Returns:
        The R&G score in percent: 100 × the sum of the accuracies.
    """
    if not accuracies:
        raise InputError("rg_score needs at least one accuracy (the FGSM sweep was empty)")
    values = []
    for eps, acc in accuracies.items():
        value = check_nonnegative(acc, f"accuracy at eps={eps}")
        if value > 1:
            raise InputError(
                f"accuracy at eps={eps} is {acc!r}; give fractions in [0, 1], not percentages"
            )
        values.append(100.0 * value)
    return math.fsum(values)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
class SweepPoint(FrozenModel):
    """FGSM accuracy (fraction in [0, 1]) at one ε of the sweep."""

    eps: float = Field(ge=0)
    accuracy: float = Field(ge=0, le=1)


class AttackResult(FrozenModel):
    """Accuracy (fraction) under one attack, its settings, and whether only correct were hit."""

    params: dict[str, Any]
    accuracy: float = Field(ge=0, le=1)
    only_correct: bool


#: Column titles of :meth:`EvaluationResult.table_rows`.
TABLE_HEADER = ("evaluation", "setting", "accuracy (%)")


class EvaluationResult(JsonResult):
    """The outcome of :func:`evaluate`; JSON round-trip with :meth:`save` / :meth:`load`.

    ``fgsm`` is the sweep in order (a list, so ε stay exact floats in JSON); ``rg_score`` is the
    R&G score in percent and must agree with the sweep (a hand-edited file that disagrees is
    rejected); ``attacks`` maps each attack's name to its accuracy.
    """

    kind: ClassVar[str] = "an evaluation result"
    rewrite: ClassVar[str] = "re-run `lsakit evaluate` to rewrite it"
    result_format: ClassVar[int] = RESULT_FORMAT

    format: int = RESULT_FORMAT
    lsakit_version: str = __version__
    n_samples: int = Field(ge=1)
    clean_accuracy: float = Field(ge=0, le=1)
    fgsm: list[SweepPoint] = Field(min_length=1)
    rg_score: float
    attacks: dict[str, AttackResult] = Field(default_factory=dict)
    #: the declared input domain the evaluation ran in (InputDomain.to_json; [0, 1] by default)
    input_domain: dict[str, Any] = Field(default_factory=lambda: UNIT.to_json())
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> EvaluationResult:
        eps = [p.eps for p in self.fgsm]
        if len(set(eps)) != len(eps):
            raise ValueError(f"the FGSM sweep repeats an ε: {eps}")
        expected = rg_score(self.fgsm_accuracies())
        if not math.isclose(self.rg_score, expected, rel_tol=0, abs_tol=1e-6):
            raise ValueError(f"rg_score {self.rg_score} is not the sum of the sweep ({expected})")
        return self

    def fgsm_accuracies(self) -> dict[float, float]:
        """The sweep as ``{ε: accuracy}``, in sweep order.

        Returns:
            ε → FGSM accuracy (a fraction in [0, 1]), in sweep order.
        """
        return {p.eps: p.accuracy for p in self.fgsm}

    def table_rows(self) -> list[tuple[str, str, str]]:
        """Rows ``(evaluation, setting, accuracy %)`` for printing under :data:`TABLE_HEADER`.

        Clean first (unless the sweep has ε = 0, which is the same number), then the FGSM sweep,
        the R&G score, and each attack with its settings. Percentages with two decimals, as in the
        paper's tables.

        Returns:
            The rows as string triples, one per line of the table.
        """
        rows: list[tuple[str, str, str]] = []
        if 0.0 not in self.fgsm_accuracies():
            rows.append(("clean", "", f"{100 * self.clean_accuracy:.2f}"))
        rows += [("FGSM", f"eps={p.eps:.4g}", f"{100 * p.accuracy:.2f}") for p in self.fgsm]
        rows.append(("R&G", f"sum of {len(self.fgsm)} FGSM accuracies", f"{self.rg_score:.2f}"))
        for name, result in self.attacks.items():
            setting = ", ".join(f"{k}={_short(v)}" for k, v in result.params.items())
            if not result.only_correct:
                setting = f"{setting}, all samples attacked" if setting else "all samples attacked"
            rows.append((name, setting, f"{100 * result.accuracy:.2f}"))
        return rows

    def __repr__(self) -> str:
        """Returns one line: the samples, clean accuracy, the FGSM sweep's R&G and each attack."""
        attacks = ", ".join(f"{name} {a.accuracy:.3f}" for name, a in self.attacks.items())
        return (
            f"EvaluationResult({plural(self.n_samples, 'sample')}, clean accuracy "
            f"{self.clean_accuracy:.3f}; FGSM at {len(self.fgsm)} ε, "
            f"R&G {self.rg_score:.2f}" + (f"; attacks: {attacks})" if attacks else ")")
        )

    def _repr_html_(self) -> str:
        """Returns Jupyter's display: the table of :meth:`table_rows` (accuracies in %)."""
        caption = f"evaluation on {plural(self.n_samples, 'sample')}"
        return table(TABLE_HEADER, self.table_rows(), caption=caption, text_columns=2)


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------------------------
# Per-batch pieces, shared by the public functions
# --------------------------------------------------------------------------------------------
def _check_eps_grid(eps: Sequence[float]) -> list[float]:
    if isinstance(eps, (str, bytes)) or not isinstance(eps, Sequence):
        raise InputError(f"eps must be a sequence of numbers, e.g. (0, 0.1, 0.2), got {eps!r}")
    if not eps:
        raise InputError("eps is empty; give at least one ε, e.g. (0, 0.1, 0.2)")
    grid = [check_nonnegative(e, "eps") for e in eps]
    seen: set[float] = set()
    for e in grid:
        if e in seen:
            raise InputError(f"eps lists {e} twice; give each ε once")
        seen.add(e)
    return grid


def _batches(
    data: Iterable[tuple[Tensor, Tensor]], device: torch.device, max_batches: int | None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Validated ``(x, y)`` batches on ``device`` (labels' range is checked on the first logits).

    Under torchrun, this rank's share of them (every world-th batch, see
    :func:`lsakit.distributed.shard_batches`); ``index`` counts this rank's batches.
    """
    if max_batches is not None:
        positive_int(max_batches, "max_batches")
    for index, batch in enumerate(distributed.shard_batches(data, max_batches)):
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise InputError(
                f"batch {index} is a {type(batch).__name__}; data must yield (x, y) pairs"
            )
        x = check_inputs(batch[0])
        y = check_labels(batch[1], x.shape[0])
        yield x.to(device), y.to(device)


def _correct(model: nn.Module, x: Tensor, y: Tensor, output: OutputSelector) -> Tensor:
    """Boolean (N,): is each sample of ``x`` classified as ``y``? One no-grad forward."""
    with torch.no_grad():
        logits = select_logits(model(x), output)
    if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        raise InputError(
            f"the model's logits have shape {tuple(logits.shape)}; expected (N, classes) = "
            f"({x.shape[0]}, C) — fix output= or the model's head"
        )
    check_labels(y, x.shape[0], num_classes=logits.shape[1])
    return logits.argmax(dim=1) == y


def _sweep_batch(
    model: nn.Module, x: Tensor, y: Tensor, grid: Sequence[float], output: OutputSelector
) -> list[Tensor]:
    """Correct-masks at every ε of ``grid`` from ONE input gradient (the sign is ε-free)."""
    direction = FGSM(model, eps=0.0, output=output).direction(x, y)
    return [_correct(model, FGSM.step(x, direction, eps), y, output) for eps in grid]


def _attack_batch(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    clean_correct: Tensor,
    attack: AttackFn,
    name: str,
    only_correct: bool,
    output: OutputSelector,
) -> int:
    """How many samples of the batch stay correctly classified under ``attack``."""
    if only_correct:
        # AutoAttack's protocol: a clean error is already an error; attacking it costs time only.
        if not bool(clean_correct.any()):
            return 0
        x, y = x[clean_correct], y[clean_correct]
    x_adv = attack(x, y)
    if not isinstance(x_adv, Tensor) or x_adv.shape != x.shape:
        shape = tuple(x_adv.shape) if isinstance(x_adv, Tensor) else type(x_adv).__name__
        raise InputError(
            f"attack {name!r} returned {shape} for a batch of shape {tuple(x.shape)}; an attack "
            f"must return a tensor of the input's shape"
        )
    return int(_correct(model, x_adv.detach().to(x.device), y, output).sum())


def _attack_params(attack: AttackFn) -> dict[str, Any]:
    params_fn = getattr(attack, "params", None)
    return dict(params_fn()) if callable(params_fn) else {}


@contextlib.contextmanager
def _sharded_progress(
    model: nn.Module,
    data: Iterable[tuple[Tensor, Tensor]],
    max_batches: int | None,
    progress: bool,
    description: str,
) -> Iterator[Callable[[], None]]:
    """Join the torchrun process group if launched so (a no-op otherwise), give ranks > 0 their
    own random stream (noise, random starts), and a progress bar on the main process only."""
    distributed.init(model_device(model))
    distributed.diverge_global_seed()
    ranks = distributed.world_size()
    with progress_bar(
        data, max_batches, progress and distributed.is_main_process(), description
    ) as (advance):

        def step() -> None:
            for _ in range(ranks):  # the other ranks' batches advance at about the same pace
                advance()

        yield step


def _sum_ranks(counts: Sequence[int]) -> list[int]:
    """Counts summed over the torchrun ranks (themselves for a single process)."""
    return [round(c) for c in distributed.all_reduce_sum(counts)]


def _no_data() -> InputError:
    return InputError("the data yielded no batch; check the data set, split and limit")


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
@follows_data_domain
def fgsm_sweep(
    model: nn.Module,
    data: Iterable[tuple[Tensor, Tensor]],
    eps: Sequence[float],
    *,
    output: OutputSelector = None,
    progress: bool = False,
    max_batches: int | None = None,
) -> dict[float, float]:
    """Accuracy (fraction in [0, 1]) under FGSM at each ε of ``eps``, in the order given.

    One input gradient per batch, reused for every ε via :meth:`FGSM.step`, then one no-grad
    forward per ε; ε = 0 gives the clean accuracy. Identical to running ``FGSM(model, eps=ε)``
    on every batch for each ε. Every sample is attacked (the paper's protocol).

    Args:
        model: the classifier; runs in eval mode, modes restored afterwards.
        data: an iterable of ``(x, y)`` batches, x in [0, 1] (e.g. a DataLoader).
        eps: the ε grid, each ≥ 0 and distinct (see :data:`PAPER_EPS`, :func:`paper_eps`).
        output: where the logits are in the model's output (tuple/dict outputs).
        progress: show a progress bar over batches.
        max_batches: stop after this many batches.

    Returns:
        ε → accuracy (a fraction in [0, 1]) over every sample seen, in the order of ``eps``.
    """
    grid = _check_eps_grid(eps)
    device = model_device(model)
    correct = [0] * len(grid)
    n = 0
    with (
        _sharded_progress(model, data, max_batches, progress, "FGSM sweep") as advance,
        eval_mode(model),
    ):
        for x, y in _batches(data, device, max_batches):
            for i, mask in enumerate(_sweep_batch(model, x, y, grid, output)):
                correct[i] += int(mask.sum())
            n += x.shape[0]
            advance()
    *correct, n = _sum_ranks([*correct, n])
    if n == 0:
        raise _no_data()
    return {e: c / n for e, c in zip(grid, correct, strict=True)}


@follows_data_domain
def robust_accuracy(
    model: nn.Module,
    data: Iterable[tuple[Tensor, Tensor]],
    attack: AttackFn,
    *,
    only_correct: bool = True,
    output: OutputSelector = None,
    progress: bool = False,
    max_batches: int | None = None,
) -> float:
    """Accuracy (fraction in [0, 1]) under ``attack``, e.g. ``PGD(model, eps=0.3, steps=40)``.

    With ``only_correct=True`` (default, AutoAttack's practice) samples misclassified on their
    clean input count as errors and are not attacked: the result is the fraction of samples
    correct both clean and attacked. ``only_correct=False`` attacks every sample and returns the
    plain accuracy on the attacked inputs (the convention of the FGSM sweep); for an attack that
    never turns an error into a correct answer the two agree, which makes it a check.

    Args:
        model: the classifier; runs in eval mode, modes restored afterwards.
        data: an iterable of ``(x, y)`` batches, x in [0, 1] (e.g. a DataLoader).
        attack: the attack, a callable ``(x, y) -> x̂`` returning a tensor of x's shape
            (``lsakit.perturb`` objects or your own).
        only_correct: attack only the samples classified correctly when clean (default), or
            every sample (False).
        output: where the logits are in the model's output (tuple/dict outputs).
        progress: show a progress bar over batches.
        max_batches: stop after this many batches.

    Returns:
        The robust accuracy, a fraction in [0, 1] of every sample seen.
    """
    if not isinstance(only_correct, bool):
        raise InputError(f"only_correct must be True or False, got {only_correct!r}")
    if not callable(attack):
        raise InputError(f"attack must be callable as attack(x, y), got {type(attack).__name__}")
    device = model_device(model)
    robust = n = 0
    with (
        _sharded_progress(model, data, max_batches, progress, "attack") as advance,
        eval_mode(model),
    ):
        for x, y in _batches(data, device, max_batches):
            clean = _correct(model, x, y, output)
            robust += _attack_batch(model, x, y, clean, attack, "attack", only_correct, output)
            n += x.shape[0]
            advance()
    robust, n = _sum_ranks([robust, n])
    if n == 0:
        raise _no_data()
    return robust / n


@follows_data_domain
def evaluate(
    model: nn.Module,
    data: Iterable[tuple[Tensor, Tensor]],
    *,
    fgsm_eps: Sequence[float] | None = None,
    attacks: Mapping[str, AttackFn] | None = None,
    only_correct: bool = True,
    output: OutputSelector = None,
    progress: bool = False,
    max_batches: int | None = None,
    meta: Mapping[str, Any] | None = None,
) -> EvaluationResult:
    """The paper's protocol (FGSM sweep and R&G score) plus any attacks, in ONE pass over ``data``.

    Per batch: one input gradient serves the whole FGSM sweep (:func:`fgsm_sweep`), the clean
    predictions come from the sweep's ε = 0 forward when the grid has ε = 0 (else one extra
    no-grad forward), then each attack runs as in :func:`robust_accuracy`.

    Args:
        model: the classifier; runs in eval mode, modes restored afterwards.
        data: an iterable of ``(x, y)`` batches, x in [0, 1].
        fgsm_eps: the FGSM grid in lsakit's units; default :data:`DEFAULT_FGSM_EPS` (the MNIST
            grid). For Moon or CIFAR-10 pass :func:`paper_eps` of the data set.
        attacks: name → attack ``(x, y) -> x̂`` (``lsakit.perturb`` objects or your own).
        only_correct: attack only the samples classified correctly when clean (see
            :func:`robust_accuracy`); the FGSM sweep always attacks every sample.
        output: where the logits are in the model's output.
        progress: show a progress bar over batches.
        max_batches: stop after this many batches.
        meta: extra JSON-able information stored in the result (model, data set, checkpoint, …).

    Returns:
        The :class:`EvaluationResult`: clean accuracy, the FGSM sweep, its R&G score and each
        attack's accuracy, over every sample seen.
    """
    grid = _check_eps_grid(DEFAULT_FGSM_EPS if fgsm_eps is None else fgsm_eps)
    attacks = dict(attacks or {})
    for name, attack in attacks.items():
        if not callable(attack):
            raise InputError(
                f"attack {name!r} must be callable as attack(x, y), got {type(attack).__name__}"
            )
    if not isinstance(only_correct, bool):
        raise InputError(f"only_correct must be True or False, got {only_correct!r}")
    zero = grid.index(0.0) if 0.0 in grid else None
    device = model_device(model)
    sweep_correct = [0] * len(grid)
    attack_correct = dict.fromkeys(attacks, 0)
    clean_correct = n = 0
    with (
        _sharded_progress(model, data, max_batches, progress, "evaluate") as advance,
        eval_mode(model),
    ):
        for x, y in _batches(data, device, max_batches):
            masks = _sweep_batch(model, x, y, grid, output)
            for i, mask in enumerate(masks):
                sweep_correct[i] += int(mask.sum())
            # FGSM.step(x, d, 0) is exactly x, so the ε = 0 forward is the clean forward.
            clean = masks[zero] if zero is not None else _correct(model, x, y, output)
            clean_correct += int(clean.sum())
            for name, attack in attacks.items():
                attack_correct[name] += _attack_batch(
                    model, x, y, clean, attack, name, only_correct, output
                )
            n += x.shape[0]
            advance()
    names = list(attack_correct)
    summed = _sum_ranks([*sweep_correct, *attack_correct.values(), clean_correct, n])
    sweep_correct = summed[: len(grid)]
    attack_correct = dict(zip(names, summed[len(grid) : len(grid) + len(names)], strict=True))
    clean_correct, n = summed[-2], summed[-1]
    if n == 0:
        raise _no_data()
    sweep = [SweepPoint(eps=e, accuracy=c / n) for e, c in zip(grid, sweep_correct, strict=True)]
    return EvaluationResult(
        n_samples=n,
        clean_accuracy=clean_correct / n,
        fgsm=sweep,
        rg_score=rg_score({p.eps: p.accuracy for p in sweep}),
        input_domain=current_domain().to_json(),
        attacks={
            name: AttackResult(
                params=_attack_params(attacks[name]),
                accuracy=attack_correct[name] / n,
                only_correct=only_correct,
            )
            for name in attacks
        },
        meta=dict(meta or {}),
    )
