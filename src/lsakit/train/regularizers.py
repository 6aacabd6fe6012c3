"""The layer-wise regularizer of AT-LR (Khalooei et al. 2022, arXiv:2202.02626, §4, Eq. 13–14).

    LR(θ, x, x̂) = Σ_{l ∈ M} γ_l · CM(φ_l(x), φ_l(x̂)),   CM = ‖φ_l(x) − φ_l(x̂)‖_F / ‖φ_l(x)‖_F

added to the base loss J(θ, x̂, y) of an adversarial-training objective. M is a set of layers: one
proposal (``"L0"``, ``"L1"``, … — the paper's "-LR-L<k>" variants), module names, or the Most
Vulnerable Layers list of an LSA run (:meth:`LayerwiseRegularizer.from_mvl`).

The representations come from a :class:`~lsakit.probe.LayerProbe` (``detach=False``) during the
training forwards the objective already runs (:mod:`lsakit.train.objectives`), so the term costs
no extra adversarial forward. CM is :func:`lsakit.measures.measure_rows` with the relative error,
plain differentiable torch.

Choices where the paper is silent (see :data:`DEFAULT_GRAD_THROUGH` and :data:`DEFAULT_GAMMA`):

* the batch reduction by default — one Frobenius norm over the whole batch tensor, as in the
  paper's reference code; ``reduction="sample"`` averages per-sample relative errors;
* an all-zero clean representation makes CM undefined: that entry contributes 0 (never NaN) and is
  counted in :attr:`LayerwiseRegularizer.last_undefined`;
* with ``reduction="sample"`` CM_l is the mean over the samples where it is defined, the same
  exclusion LSA's statistics use.

Every penalty the trainer adds to the objective's loss — AT-LR here, LSP
(:mod:`lsakit.train.lsp`) and the sparsity penalty (:mod:`lsakit.defenses.sparsity`) — is a
:class:`Regularizer`: the training step (:func:`lsakit.train.step.training_step`) iterates one list
of them, handing each the :class:`RegularizerInputs` of the step.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol, get_args, runtime_checkable

import torch
from torch import Tensor, nn

from lsakit import distributed, speed
from lsakit._torch import eval_mode
from lsakit.analysis import LSAResult, PerturbationFn, analyze
from lsakit.config.defaults import DEFAULT_ETA, DEFAULT_GAMMA, DEFAULT_GRAD_THROUGH, GradThrough
from lsakit.errors import ConfigError, InputError
from lsakit.measures import measure_rows
from lsakit.perturb import PGD
from lsakit.probe import LayerProbe, LayerSpec, default_layers, resolve_layers, unprinted
from lsakit.validate import choice, number

LRReduction = Literal["batch", "sample"]


# --------------------------------------------------------------------------------------------
# The protocol every training penalty follows
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegularizerInputs:
    """What a regularizer's term may read from one training step.

    Attributes:
        model: the model as trained (possibly a DDP or ``torch.compile`` wrapper); ``module`` is
            the bare one, whose weights a weight penalty reads.
        x: the clean batch, on the model's device.
        x_adv: the adversarial batch (None for an objective without one).
        names: the names of the representations the step's probe captured, in capture order.
        clean: φ(x) for each name, with gradient (None without a probe).
        adv: φ(x̂) for each name (None without an adversarial training forward).
    """

    model: nn.Module
    x: Tensor
    x_adv: Tensor | None = None
    names: Sequence[str] = ()
    clean: Sequence[Tensor] | None = None
    adv: Sequence[Tensor] | None = None

    @property
    def module(self) -> nn.Module:
        """The bare model inside a DDP / ``torch.compile`` wrapper."""
        return distributed.unwrap(speed.uncompiled(self.model))

    def select(self, reps: Sequence[Tensor] | None, layers: Sequence[str]) -> list[Tensor] | None:
        """``reps`` (``clean`` or ``adv``) at ``layers``: by name where the capture names them
        all, else the whole capture (a probe built on those layers alone, e.g. on labels).

        Args:
            reps: the captured representations, :attr:`clean` or :attr:`adv` (may be None).
            layers: the representation names wanted, in the order wanted.

        Returns:
            The tensors of ``layers`` in that order when :attr:`names` holds them all, else
            every tensor of ``reps`` in capture order; None when ``reps`` is None.
        """
        if reps is None:
            return None
        if layers and all(name in self.names for name in layers):
            index = {name: i for i, name in enumerate(self.names)}
            return [reps[index[name]] for name in layers]
        return list(reps)


@runtime_checkable
class Regularizer(Protocol):
    """A penalty added to the objective's loss in every training step.

    The trainer calls :meth:`prepare` once per epoch (it returns the epoch's regularizer and
    leaves itself as it is), captures the union of the prepared regularizers' :attr:`layers` with one
    :class:`~lsakit.probe.LayerProbe` (``detach=False``) and adds each :meth:`term` to the loss, in
    list order; the sum of the terms is what it logs as ``train_reg``.
    """

    #: the term's short name in messages (``"lr"``, ``"lsp"``, ``"sparsity"``)
    name: ClassVar[str]

    @property
    def layers(self) -> Sequence[str]:
        """The representations the term reads (exact names once prepared; empty: none, a term
        of the weights alone)."""
        ...

    def prepare(self, model: nn.Module, example: Tensor) -> Regularizer:
        """The regularizer for ``model``, its layers resolved to exact representation names (with
        dry forwards of ``example`` where needed; modes, parameters and buffers untouched).

        Args:
            model: the bare model being trained (not its DDP or compiled wrapper).
            example: an input batch on the model's device, for the dry forwards.

        Returns:
            The regularizer to use this epoch (possibly a new object; this one is left as it
            is).
        """
        ...

    def term(self, inputs: RegularizerInputs) -> Tensor:
        """The differentiable scalar it adds to the loss.

        Args:
            inputs: what the training step offers: the model, the clean and adversarial batches
                and the representations the step's probe captured.

        Returns:
            A 0-d tensor, differentiable with respect to the model's parameters.
        """
        ...

    def describe(self) -> dict[str, Any]:
        """Its settings as JSON-able values.

        Returns:
            The settings by name, as JSON-able values.
        """
        ...


#: PGD steps of the default attack of :meth:`LayerwiseRegularizer.from_mvl` (step 2.5·ε/steps).
MVL_PGD_STEPS = 10

_GRAD_THROUGH: tuple[str, ...] = get_args(GradThrough)
_REDUCTIONS: tuple[str, ...] = get_args(LRReduction)
_LABEL = re.compile(r"^L(\d+)$")


def _check_gamma(value: object, where: str) -> float:
    return number(value, "gamma", low=0.0, suffix=f" {where}" if where else "")


class LayerwiseRegularizer:
    """LR = Σ_l γ_l · CM(φ_l(x), φ_l(x̂)) (paper Eq. 14), differentiable.

    Args:
        layers: the layers M — paper labels ``"L<k>"`` (k-th activation in forward order) or
            module names from ``named_modules()`` (a module run several times per forward: every
            call, or one call as ``name#k``; a printed layer ``"L5 (layer2.0.conv1)"`` is its
            name), not labels and names at once, no globs; a single string is one layer. ``"mvl"``
            is not a layer: build with :meth:`from_mvl`.
        gamma: one γ ≥ 0 for every layer, a sequence (one per layer, in the order given) or a
            mapping layer → γ covering exactly the layers. Default :data:`DEFAULT_GAMMA`.
        grad_through: ``"both"`` (default), ``"adversarial"`` (φ_l(x) detached) or ``"clean"``
            (φ_l(x̂) detached).
        reduction: ``"batch"`` (default: one Frobenius norm over the batch, the paper's form) or
            ``"sample"`` (per-sample relative error, averaged).

    Attributes:
        layers: the layers in the order the probe captures them: pass to
            ``LayerProbe(model, layers=reg.layers, detach=False)``. Labels are sorted by k
            (forward order); module names keep the order given, which must be forward order
            (:meth:`check_probe` verifies it against a probe). After :meth:`resolve` (the trainer
            calls it), exact representation names: one per captured representation.
        gammas: γ_l, aligned with ``layers``.
        last_undefined: after a call, a 0-d int64 tensor: how many (layer, row) entries had an
            all-zero clean representation and contributed 0 (a tensor, so no device sync).
        lsa_result: the LSA result the layers came from (:meth:`from_mvl`), else None.

    Example::

        reg = LayerwiseRegularizer(["L2"], gamma=1.0)
        with LayerProbe(model, reg.layers, detach=False) as probe:
            out = objective(model, x, y, probe)     # TRADES / MART capture both
            loss = out.loss + reg(out.clean_reps, out.adv_reps)

    As a :class:`Regularizer` (the trainer's list): :meth:`prepare` is :meth:`resolve`, and
    :meth:`term` reads φ_l(x) and φ_l(x̂) of its layers from the step's capture.
    """

    name: ClassVar[str] = "lr"

    def __init__(
        self,
        layers: Sequence[str] | str,
        gamma: float | Sequence[float] | Mapping[str, float] = DEFAULT_GAMMA,
        *,
        grad_through: GradThrough = DEFAULT_GRAD_THROUGH,
        reduction: LRReduction = "batch",
    ) -> None:
        names = self._check_layers(layers)
        gammas = self._check_gammas(names, gamma)
        choice(grad_through, "grad_through", _GRAD_THROUGH)
        choice(reduction, "reduction", _REDUCTIONS)
        pairs = list(zip(names, gammas, strict=True))
        if all(_LABEL.match(n) for n in names):
            # Labels name forward positions, and the probe returns forward order: sort to match.
            pairs.sort(key=lambda p: int(p[0][1:]))
        self.layers: list[str] = [n for n, _ in pairs]
        self.gammas: list[float] = [g for _, g in pairs]
        self.grad_through: GradThrough = grad_through
        self.reduction: LRReduction = reduction
        self.last_undefined: Tensor | None = None
        self.lsa_result: LSAResult | None = None

    # -- validation ------------------------------------------------------------------------------
    @staticmethod
    def _check_layers(layers: Sequence[str] | str) -> list[str]:
        specs = [layers] if isinstance(layers, str) else list(layers)
        specs = [unprinted(s) if isinstance(s, str) else s for s in specs]
        if not specs:
            raise ConfigError("the regularizer needs at least one layer, e.g. layers=['L2']")
        for spec in specs:
            if not isinstance(spec, str) or not spec:
                raise ConfigError(f"layers must be L<k> labels or module names, got {spec!r}")
            if spec.lower() == "mvl":
                raise ConfigError(
                    "'mvl' is resolved by an LSA run: build the regularizer with "
                    "LayerwiseRegularizer.from_mvl(model, data, eps=...)"
                )
            if any(c in spec for c in "*?["):
                raise ConfigError(
                    f"layer {spec!r} is a glob; list the layers explicitly so each gets one γ"
                )
        duplicates = sorted({s for s in specs if specs.count(s) > 1})
        if duplicates:
            raise ConfigError(f"layers listed twice: {', '.join(duplicates)}; list each once")
        labels = [bool(_LABEL.match(s)) for s in specs]
        if any(labels) and not all(labels):
            raise ConfigError(
                "mixing L<k> labels and module names is ambiguous (a module may be a labelled "
                "layer too); use one kind"
            )
        return specs

    @staticmethod
    def _check_gammas(
        layers: list[str], gamma: float | Sequence[float] | Mapping[str, float]
    ) -> list[float]:
        if isinstance(gamma, Mapping):
            missing = [n for n in layers if n not in gamma]
            extra = sorted(str(k) for k in gamma if k not in layers)
            if missing or extra:
                raise ConfigError(
                    f"gamma mapping must cover exactly the layers {layers}: missing "
                    f"{missing or 'none'}, unknown {extra or 'none'}"
                )
            return [_check_gamma(gamma[n], f"of layer {n}") for n in layers]
        if isinstance(gamma, Sequence) and not isinstance(gamma, str):
            if len(gamma) != len(layers):
                raise ConfigError(
                    f"gamma has {len(gamma)} values for {len(layers)} layers {layers}; give "
                    f"one per layer or a single number"
                )
            return [_check_gamma(g, f"of layer {n}") for n, g in zip(layers, gamma, strict=True)]
        value = _check_gamma(gamma, "")
        return [value] * len(layers)

    def check_probe(self, probe: LayerProbe) -> None:
        """Check that ``probe`` (after its first capture) yields these layers, in this order.

        Only module names can be checked (labels are positions the probe resolves itself); a
        mismatch raises ConfigError giving the forward order to use.

        Args:
            probe: a :class:`~lsakit.probe.LayerProbe` on :attr:`layers` that has captured at
                least one forward.
        """
        captured = [layer.name for layer in probe.layers]
        if len(captured) != len(self.layers):
            raise ConfigError(
                f"the probe captures {len(captured)} representations ({captured}) for "
                f"{len(self.layers)} regularized layers {self.layers}; a module called several "
                f"times per forward yields one per call — use reg.resolve(model, example) "
                f"(the trainer does) or list the calls as 'name#0', 'name#1'"
            )
        if not _LABEL.match(self.layers[0]) and captured != self.layers:
            raise ConfigError(
                f"the probe captures the layers in the forward order {captured}, but the "
                f"regularizer lists {self.layers}; give the layers in forward order"
            )

    def resolve(self, model: nn.Module, example: Tensor) -> LayerwiseRegularizer:
        """The same regularizer over exact representation names, found with one dry forward.

        Labels become the names of the default layers they denote, a module run several times
        per forward becomes one entry per call (``name#0``, ``name#1``, …, each with the module's
        γ); the result's ``layers`` select exactly the representations a probe on the original
        spec captures, in forward order, so ``LayerProbe(model, reg.layers)`` and the term agree.
        The model's modes are restored; parameters and buffers are untouched (no_grad, eval).

        Args:
            model: the model the probe will hook (the bare module, not a DDP or compiled
                wrapper).
            example: an input batch on the model's device, for the dry forward.

        Returns:
            A shallow copy whose :attr:`layers` are exact representation names and whose
            :attr:`gammas` follow them; this regularizer is unchanged. A label beyond the
            model's default layers raises ConfigError.
        """
        resolved = copy.copy(self)
        if _LABEL.match(self.layers[0]):  # the default layers' names are exact: one forward
            with eval_mode(model):
                defaults = default_layers(model, example)
            for label in self.layers:
                k = int(label[1:])
                if k >= len(defaults):
                    raise ConfigError(
                        f"layer {label} does not exist: this model has {len(defaults)} default "
                        f"layers (L0..L{len(defaults) - 1}); pick one of those"
                    )
            resolved.layers = [defaults[int(label[1:])].name for label in self.layers]
            return resolved
        by_name = dict(zip(self.layers, self.gammas, strict=True))
        with eval_mode(model):
            captured = resolve_layers(model, list(self.layers), example)
        resolved.layers = [layer.name for layer in captured]
        resolved.gammas = [
            by_name[layer.name] if layer.name in by_name else by_name[layer.module_name]
            for layer in captured
        ]
        return resolved

    def prepare(self, model: nn.Module, example: Tensor) -> LayerwiseRegularizer:
        """:meth:`resolve` (the :class:`Regularizer` protocol).

        Args:
            model: the bare model being trained.
            example: an input batch on the model's device, for the dry forward.

        Returns:
            The resolved copy (see :meth:`resolve`).
        """
        return self.resolve(model, example)

    def term(self, inputs: RegularizerInputs) -> Tensor:
        """LR on the step's captured representations of :attr:`layers`.

        Args:
            inputs: the step's inputs; ``clean`` and ``adv`` must hold the representations (an
                objective without an adversarial forward raises ConfigError).

        Returns:
            LR(θ, x, x̂), a differentiable 0-d tensor (see ``__call__``).
        """
        if inputs.adv is None:
            raise ConfigError("the layer-wise regularizer needs an adversarial objective")
        return self(
            inputs.select(inputs.clean, self.layers), inputs.select(inputs.adv, self.layers)
        )

    # -- the term --------------------------------------------------------------------------------
    def per_layer(
        self, clean_reps: Sequence[Tensor] | None, adv_reps: Sequence[Tensor] | None
    ) -> list[Tensor]:
        """γ_l · CM(φ_l(x), φ_l(x̂)) for each layer (0-d tensors, differentiable), for logging.

        Also sets :attr:`last_undefined`. Missing representations, or a count other than one per
        layer, raise InputError.

        Args:
            clean_reps: φ_l(x) for each of :attr:`layers`, in that order (with gradient).
            adv_reps: φ_l(x̂) for each of :attr:`layers`, in that order, shaped like
                ``clean_reps``.

        Returns:
            The weighted terms γ_l · CM_l, aligned with :attr:`layers`.
        """
        if clean_reps is None or adv_reps is None:
            which = "clean" if clean_reps is None else "adversarial"
            raise InputError(
                f"the layer-wise regularizer needs the {which} representations; run the "
                f"objective with a LayerProbe (and, for objectives without a clean forward, one "
                f"clean forward inside the probe)"
            )
        if len(clean_reps) != len(self.layers) or len(adv_reps) != len(self.layers):
            raise InputError(
                f"got {len(clean_reps)} clean and {len(adv_reps)} adversarial representations "
                f"for {len(self.layers)} layers {self.layers}; a module called several times per "
                f"forward yields one representation per call: regularize "
                f"reg.resolve(model, example), which lists each call (name#0, name#1, …) with its "
                f"own γ, and build the probe with layers=reg.layers"
            )
        terms: list[Tensor] = []
        undefined: list[Tensor] = []
        for gamma, clean, adv in zip(self.gammas, clean_reps, adv_reps, strict=True):
            if self.grad_through == "adversarial":
                clean = clean.detach()
            elif self.grad_through == "clean":
                adv = adv.detach()
            values, defined = measure_rows("relative_error", clean, adv, self.reduction)
            # An undefined entry (all-zero clean row) contributes exactly 0 — also to the gradient,
            # since where() routes no gradient into the branch it does not select.
            values = torch.where(defined, values, torch.zeros_like(values))
            n_defined = defined.sum()
            cm = values.sum() / n_defined.clamp(min=1).to(values.dtype)
            terms.append(gamma * cm)
            undefined.append(defined.numel() - n_defined)
        self.last_undefined = torch.stack(undefined).sum()
        return terms

    def __call__(
        self, clean_reps: Sequence[Tensor] | None, adv_reps: Sequence[Tensor] | None
    ) -> Tensor:
        """LR(θ, x, x̂) = Σ_l γ_l · CM_l: a differentiable scalar."""
        return torch.stack(self.per_layer(clean_reps, adv_reps)).sum()

    # -- construction from LSA -------------------------------------------------------------------
    @classmethod
    def from_mvl(
        cls,
        model: nn.Module,
        data: Iterable[tuple[Tensor, Tensor]],
        *,
        eps: float | None = None,
        eta: float = DEFAULT_ETA,
        attack: PerturbationFn | None = None,
        gamma: float | Mapping[str, float] = DEFAULT_GAMMA,
        max_batches: int | None = None,
        grad_through: GradThrough = DEFAULT_GRAD_THROUGH,
        reduction: LRReduction = "batch",
        layers: LayerSpec = None,
    ) -> LayerwiseRegularizer:
        """Regularize the MVL list of an LSA run (paper Algorithm 2 → Eq. 14).

        Runs :func:`lsakit.analyze` on ``model`` over ``data`` with ``attack`` (default: PGD-10 at
        ``eps`` with a random start, seed 0) over the selection ``layers`` (default: the
        activation layers; any :class:`~lsakit.probe.LayerProbe` selection, e.g. ``nn.Conv2d``)
        and regularizes ``result.most_vulnerable_layers(eta)`` by their exact representation
        names, so the layers regularized are the layers the analysis measured. A ``gamma``
        mapping may key layers by label or by name. The LSA result is kept in ``lsa_result``. An
        empty MVL list raises ConfigError naming η (lower it).

        Args:
            model: the classifier to analyse (the one to be trained).
            data: ``(x, y)`` batches for the LSA run (e.g. a DataLoader), x in the declared
                input domain.
            eps: ε of the default PGD attack; required when ``attack`` is None, unused
                otherwise.
            eta: η of Algorithm 1: the layers whose mean relative error exceeds μ + η·σ are
                regularized (default :data:`~lsakit.config.defaults.DEFAULT_ETA`).
            attack: the perturbation of the LSA run, called as ``attack(x, y)``; None: PGD-10
                at ``eps`` (α = 2.5·ε/10, random start, seed 0).
            gamma: one γ ≥ 0 for every selected layer, or a mapping keyed by label or name
                (keys of layers that were not selected are dropped; every selected layer needs
                one).
            max_batches: analyse at most this many batches of ``data`` (None: all).
            grad_through: where the gradient of LR flows, as in the constructor.
            reduction: ``"batch"`` or ``"sample"``, as in the constructor.
            layers: the layers LSA measures (any :class:`~lsakit.probe.LayerProbe` selection);
                None: the default activation layers, regularized by label.

        Returns:
            A new regularizer over the MVL layers, with :attr:`lsa_result` set.
        """
        if attack is None:
            if eps is None:
                raise ConfigError(
                    "from_mvl needs the attack budget: pass eps= (or an attack=) for the LSA run"
                )
            attack = PGD(model, eps=eps, steps=MVL_PGD_STEPS, random_start=True, seed=0)
        result = analyze(model, data, {"attack": attack}, max_batches=max_batches, layers=layers)
        mvl = result.most_vulnerable_layers(eta)
        if not mvl:
            means = ", ".join(
                f"{layer.label}={layer.mean:.3g}"
                for layer in result.perturbations[0].layers
                if layer.mean is not None
            )
            raise ConfigError(
                f"the MVL list is empty at eta={eta} (no layer's relative error exceeds μ + η·σ; "
                f"per-layer: {means}); lower eta or name the layers"
            )
        # Labels L<k> denote the default selection's layers; for another selection the MVL list
        # is regularized by its exact names, so it means the same representations.
        names = [layer.label if layers is None else layer.module_name for layer in mvl]
        if isinstance(gamma, Mapping):
            # The caller cannot know the list in advance: a mapping may name more layers than
            # were selected (a missing one is still an error, raised by the constructor).
            key_of = {
                k: name for layer, name in zip(mvl, names, strict=True)
                for k in (layer.label, layer.module_name)
            }  # fmt: skip
            gamma = {key_of[key]: value for key, value in gamma.items() if key in key_of}
        reg = cls(
            names,
            gamma,
            grad_through=grad_through,
            reduction=reduction,
        )
        reg.lsa_result = result
        return reg

    def describe(self) -> dict[str, Any]:
        """JSON-able settings: layers, gammas, grad_through, reduction.

        Returns:
            ``{"layers": […], "gammas": […], "grad_through": …, "reduction": …}``.
        """
        return {
            "layers": list(self.layers),
            "gammas": list(self.gammas),
            "grad_through": self.grad_through,
            "reduction": self.reduction,
        }

    def __repr__(self) -> str:
        return (
            f"LayerwiseRegularizer(layers={self.layers}, gamma={self.gammas}, "
            f"grad_through={self.grad_through!r}, reduction={self.reduction!r})"
        )


__all__ = [
    "DEFAULT_GAMMA",
    "DEFAULT_GRAD_THROUGH",
    "GradThrough",
    "LRReduction",
    "LayerwiseRegularizer",
    "Regularizer",
    "RegularizerInputs",
]
