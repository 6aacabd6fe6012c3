"""LSP: local structure preserving regularization (Wei, Zhou & Wu 2023, arXiv:2303.16861).

LSP keeps the local structure of the input space in the learned embedding space, so an adversarial
point near a clean sample stays near it in the embedding. The paper's equations were not available
(spec ``companion-methods.md`` §B); everything below is a reconstruction *(inferred)* in two
configurable forms, with the embedding z = h(x) taken at the penultimate layer by default:

* ``"kl"`` (t-SNE-like): input affinities P and embedding affinities Q of the same form,

      p_{j|i} = exp(−‖x_i − x_j‖² / 2s_i²) / Σ_{l≠i} exp(−‖x_i − x_l‖² / 2s_i²),   p_{i|i} = 0,

  and L = mean_i KL(P_i ‖ Q_i) (:func:`lsp_kl_loss`);
* ``"laplacian"``: L = (1/N) Σ_i Σ_{j∈kNN_x(i)} w_ij ‖z_i − z_j‖² / mean_i ‖z_i − z̄‖²,
  w_ij = exp(−‖x_i − x_j‖² / t) (:func:`lsp_laplacian_loss`).

The training loss is CE(f(x), y) + λ·L without adversarial training and CE(f(x̂), y) + λ·L with it,
L computed on the clean batch or on clean ∪ adversarial (:class:`LocalStructureRegularizer`). The
mechanism check is the k-NN overlap between input and embedding space (:func:`knn_overlap`,
:func:`embedding_knn_overlap`), which LSP should raise.

Choices made here (the paper is silent on all of them):

* Points are flattened per sample; squared distances use the Gram form on batch-centred points
  (exact in exact arithmetic; centring limits cancellation when features share a large offset).
* Median heuristic: s_i² = the median (the mean of the two middle values for an even count) of
  row i's candidate squared distances — all j ≠ i, or the k nearest when ``k`` is set.
* Perplexity: t-SNE's calibration (van der Maaten & Hinton 2008): s_i such that the entropy of P_i
  (natural log) is log(perplexity), found by :data:`PERPLEXITY_SEARCH_STEPS` vectorised bisection
  steps on log β_i, β_i = 1/2s_i², over e^±30 times the row's mean candidate distance. A
  perplexity ≥ the number of candidates cannot be reached: the row is then uniform (β_i = 0).
* Bandwidth floor: s_i² ≥ :data:`BANDWIDTH_FLOOR` × the batch's mean non-self squared distance
  (and ≥ 1e-12), so a row whose median neighbour is a duplicate keeps a finite, scale-relative
  bandwidth instead of an infinite one (huge gradients).
* Bandwidths are constants in the backward pass (computed on detached points, as t-SNE calibrates
  them once): a gradient through a median or a bisection is ill-defined or noise.
* ``k`` restricts P only (its other entries are 0 before normalising); Q always spans every j ≠ i,
  as in Barnes–Hut t-SNE, so every pair gets a gradient: x-neighbours are pulled together and
  non-neighbours pushed apart through the normalisation. Consequently L = 0 at z = x only for
  ``k=None``; with ``k`` the minimum has each x-neighbourhood tighter in z than the rest.
* log Q is clamped at log(1e-12) (:data:`LOG_Q_FLOOR`): the loss stays finite for degenerate rows.
* Laplacian: the sum over i is divided by N (the spec writes Σ_i): λ then does not depend on the
  batch size and shares a scale with the KL form, which is a mean over i. The normaliser is the
  centred second moment mean_i ‖z_i − z̄‖² by default: with the spec's raw mean ‖z‖² the network
  can shrink the loss by adding a shared offset to z (the failure the layer-wise regularizer showed
  at large γ, see :mod:`lsakit.train.regularizers`); ``centered=False`` gives the spec's form.
  t defaults to the median of the N·k input kNN squared distances.
* Ties among equidistant neighbours are broken by :func:`torch.topk`.
* "Penultimate" is the input of the model's last ``nn.Linear`` (:func:`penultimate_layer`).
* :data:`DEFAULT_WEIGHT` λ = 0.1, the low end of the spec's grid {0.1, 0.5, 1, 2}: on MNIST
  (model B, 3000 images, 1 epoch) λ = 1 with the median bandwidth and no k-NN restriction
  collapsed training to a constant classifier — on 784-dim inputs the median bandwidth makes P
  nearly uniform, and matching it spreads the embedding of every class — while λ = 0.1 with
  k = 10 trained like λ = 0. Not tuned further.
"""

from __future__ import annotations

import copy
import re
from typing import TYPE_CHECKING, Any, ClassVar, get_args

import torch
from torch import Tensor, nn

from lsakit._checks import check_inputs
from lsakit._torch import eval_mode, model_device
from lsakit.config.defaults import (
    DEFAULT_BANDWIDTH,
    DEFAULT_PERPLEXITY,
    Bandwidth,
    LSPOn,
    LSPVariant,
)

# The defaults and option types are the configuration's (lsakit.config.defaults): DEFAULT_WEIGHT
# is the default λ, the low end of the spec's grid {0.1, 0.5, 1, 2} (see the module docstring).
from lsakit.config.defaults import DEFAULT_LSP_WEIGHT as DEFAULT_WEIGHT
from lsakit.errors import ConfigError, InputError
from lsakit.probe import LayerProbe, check_layers, resolve_layers
from lsakit.train.local_structure import (
    _ATTACK_FIX,
    _DATA_FIX,
    _EMBEDDING_FIX,
    BANDWIDTH_FLOOR,
    LOG_Q_FLOOR,
    PERPLEXITY_SEARCH_STEPS,
    _batch,
    _check_bandwidth,
    _check_optional_k,
    _check_perplexity,
    _check_same_batch,
    embedding_affinities,
    input_affinities,
    knn_indices,
    knn_overlap,
    lsp_kl_loss,
    lsp_laplacian_loss,
    squared_distances,
)
from lsakit.validate import choice, number, positive_int

if TYPE_CHECKING:
    from lsakit.train.regularizers import RegularizerInputs

_VARIANTS: tuple[str, ...] = get_args(LSPVariant)
_ONS: tuple[str, ...] = get_args(LSPOn)
_LABEL = re.compile(r"^L(\d+)$")


# --------------------------------------------------------------------------------------------
# The embedding layer
# --------------------------------------------------------------------------------------------
def _candidate_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules in registration order; an nn.Linear counts as a leaf (parametrizations)."""
    out: list[tuple[str, nn.Module]] = []
    linear_prefixes: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(p) for p in linear_prefixes):
            continue
        if isinstance(module, nn.Linear):
            linear_prefixes.append(name + ".")
            out.append((name, module))
        elif next(module.children(), None) is None:
            out.append((name, module))
    return out


def penultimate_layer(model: nn.Module, example: Tensor | None = None) -> str:
    """The name of the module whose output feeds the model's last ``nn.Linear`` (LSP's default z).

    "Last" and "feeds" follow registration order (``named_modules()``, leaves only): the module
    registered just before the last registered ``nn.Linear``, e.g. ``"relu4"`` (the ReLU before
    ``fc2``) for model B, ``"elu3"`` for model A, ``"flatten"`` for the CIFAR networks. That is the
    forward order for ``nn.Sequential`` and for every lsakit model; for a custom model pass
    ``example`` (a batch of inputs) to check it on a forward pass: the last Linear applied to the
    captured output must reproduce the Linear's captured output, else ConfigError.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    leaves = _candidate_modules(model)
    positions = [i for i, (_, m) in enumerate(leaves) if isinstance(m, nn.Linear)]
    if not positions:
        raise ConfigError(
            f"{type(model).__name__} has no nn.Linear, so no penultimate layer; pass layer= "
            f"(a module name or an L<k> label)"
        )
    last = positions[-1]
    linear_name, linear = leaves[last]
    if last == 0:
        raise ConfigError(
            f"the last nn.Linear {linear_name!r} is the model's first layer: its input is the raw "
            f"input, not an embedding; pass layer= explicitly"
        )
    name = leaves[last - 1][0]
    if example is not None:
        _verify_feeds(model, name, linear_name, linear, example)
    return name


def _verify_feeds(
    model: nn.Module, name: str, linear_name: str, linear: nn.Module, example: Tensor
) -> None:
    """Check on one forward that ``linear(output of name)`` reproduces the Linear's output."""
    with torch.no_grad(), eval_mode(model), LayerProbe(model, [name, linear_name]) as probe:
        model(example.to(model_device(model)))
        try:
            reps = probe.take()
            layers = probe.layers
        except RuntimeError:  # neither module ran in the forward
            reps, layers = [], []
        outs = [i for i, layer in enumerate(layers) if layer.module_name == linear_name]
        feeds = [
            i
            for i, layer in enumerate(layers)
            if layer.module_name == name and outs and i < outs[-1]
        ]
        ok = False
        if feeds:
            try:
                ok = bool(torch.allclose(linear(reps[feeds[-1]]), reps[outs[-1]], atol=1e-5))
            except RuntimeError:  # shape mismatch: the module does not feed the Linear
                ok = False
    if not ok:
        raise ConfigError(
            f"{name!r} (registered before the last nn.Linear {linear_name!r}) does not feed it in "
            f"the forward pass; pass layer= with the module whose output enters {linear_name!r}"
        )


def embedding_knn_overlap(
    model: nn.Module, layer: str | None, x: Tensor, k: int, *, batch_size: int = 256
) -> float:
    """:func:`knn_overlap` between inputs ``x`` and the model's representation at ``layer``.

    The representation is captured with a :class:`~lsakit.probe.LayerProbe` in eval mode, without
    gradient, in chunks of ``batch_size`` (the overlap itself is over the whole of ``x``).

    Args:
        model: the network; its device is used.
        layer: a module name, an ``L<k>`` label, or ``None`` for :func:`penultimate_layer`.
        x: inputs (N, …) in [0, 1], N ≥ k + 1.
        k: neighbours per point.
        batch_size: forward chunk size (≥ 1).
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    k = positive_int(k, "k")
    batch_size = positive_int(batch_size, "batch_size")
    check_inputs(x, "x")
    name = _check_layer(layer) or penultimate_layer(model)
    device = model_device(model)
    chunks: list[Tensor] = []
    with torch.no_grad(), eval_mode(model), LayerProbe(model, [name]) as probe:
        for start in range(0, x.shape[0], batch_size):
            model(x[start : start + batch_size].to(device))
            reps = probe.take()
            if len(reps) != 1:
                raise InputError(
                    f"layer {name!r} produced {len(reps)} representations in one forward (a module "
                    f"used more than once); pick a layer called once"
                )
            chunks.append(reps[0].flatten(1))
    return knn_overlap(x, torch.cat(chunks), k)


# --------------------------------------------------------------------------------------------
# The regularizer
# --------------------------------------------------------------------------------------------
def _check_layer(layer: object) -> str | None:
    if layer is None:
        return None
    if not isinstance(layer, str) or not layer:
        raise ConfigError(
            f"layer must be a module name, an L<k> label or None (penultimate), got {layer!r}"
        )
    if any(c in layer for c in "*?["):
        raise ConfigError(f"layer {layer!r} is a glob; LSP embeds at one layer: name it exactly")
    if layer.lower() == "mvl":
        raise ConfigError("LSP embeds at one layer, not an MVL list; name a layer or pass None")
    return layer


class LocalStructureRegularizer:
    """λ·L_LSP: keep the input's local structure in the embedding (Wei et al. 2023, spec B).

    Added to the base loss: CE(f(x), y) + λ·L without adversarial training, CE(f(x̂), y) + λ·L with
    it. L is :func:`lsp_kl_loss` (``variant="kl"``) or :func:`lsp_laplacian_loss`
    (``"laplacian"``), computed on the clean batch (``on="clean"``) or on clean ∪ adversarial
    (``"clean+adv"``), where each adversarial point has its clean source as a near neighbour.

    Args:
        weight: λ ≥ 0 (spec grid {0.1, 0.5, 1, 2}); default :data:`DEFAULT_WEIGHT`.
        variant: ``"kl"`` (default) or ``"laplacian"``.
        layer: where z is taken: a module name, an ``L<k>`` label, or ``None`` for the
            penultimate layer (:func:`penultimate_layer`), resolved by :meth:`probe_layers`.
        on: ``"clean"`` (default) or ``"clean+adv"``.
        k: neighbourhood size; optional for ``"kl"`` (restricts P), required for ``"laplacian"``.
        bandwidth, perplexity: how s_i is set (``"kl"`` only).
        t: heat-kernel temperature (``"laplacian"`` only; ``None``: the median kNN distance).
        centered: the Laplacian's normaliser (``"laplacian"`` only), see :func:`lsp_laplacian_loss`.

    Attributes:
        last_loss: after a call, the unweighted L as a detached 0-d tensor (no device sync).

    Example::

        reg = LocalStructureRegularizer(weight=1.0, on="clean+adv")
        with LayerProbe(model, reg.probe_layers(model), detach=False) as probe:
            out = objective(model, x, y, probe)          # captures φ(x) and φ(x̂)
            loss = out.loss + reg(x, out.clean_reps[0], out.x_adv, out.adv_reps[0])

    As a :class:`~lsakit.train.regularizers.Regularizer` (the trainer's list): :meth:`prepare`
    finds the one representation z is taken at, and :meth:`term` reads it from the step's capture.
    """

    name: ClassVar[str] = "lsp"

    def __init__(
        self,
        *,
        weight: float = DEFAULT_WEIGHT,
        variant: LSPVariant = "kl",
        layer: str | None = None,
        on: LSPOn = "clean",
        k: int | None = None,
        bandwidth: Bandwidth = DEFAULT_BANDWIDTH,
        perplexity: float = DEFAULT_PERPLEXITY,
        t: float | None = None,
        centered: bool = True,
    ) -> None:
        self.weight = number(weight, "weight", low=0.0, suffix=" (λ)")
        choice(variant, "variant", _VARIANTS)
        choice(on, "on", _ONS)
        self.variant: LSPVariant = variant
        self.on: LSPOn = on
        self.layer = _check_layer(layer)
        self.k = _check_optional_k(k)
        self.bandwidth = _check_bandwidth(bandwidth)
        self.perplexity = _check_perplexity(perplexity)
        if not isinstance(centered, bool):
            raise ConfigError(f"centered must be True or False, got {centered!r}")
        self.centered = centered
        if variant == "laplacian" and self.k is None:
            raise ConfigError("the laplacian variant needs k (neighbours per point), e.g. k=5")
        if t is not None:
            if variant != "laplacian":
                raise ConfigError("t is the laplacian variant's temperature; drop it for kl")
            t = number(t, "t", low=0.0, strict=True)
        self.t = t
        self.last_loss: Tensor | None = None
        #: the exact name of the representation z is taken at, once prepared
        self._captured: str | None = None

    def probe_layers(self, model: nn.Module, example: Tensor | None = None) -> list[str]:
        """``[layer]`` for ``LayerProbe(model, ..., detach=False)``: the given layer or the
        penultimate one (``example`` checks the latter on a forward, see
        :func:`penultimate_layer`)."""
        if self.layer is not None:
            if not _LABEL.match(self.layer):
                check_layers(model, [self.layer])
            return [self.layer]
        return [penultimate_layer(model, example)]

    @property
    def layers(self) -> list[str]:
        """``[name]`` of the representation z is taken at: exact once prepared; before,
        the given layer (``[]`` for the penultimate one, which the model determines)."""
        if self._captured is not None:
            return [self._captured]
        return [self.layer] if self.layer is not None else []

    def prepare(self, model: nn.Module, example: Tensor) -> LocalStructureRegularizer:
        """The regularizer with its layer resolved to the exact name of one representation (the
        penultimate layer checked on a forward of ``example``, then one dry forward in eval mode,
        see :meth:`probe_layers`)."""
        layer = self.probe_layers(model, example)[0]
        with eval_mode(model):
            captured = resolve_layers(model, [layer], example)
        if len(captured) != 1:
            raise ConfigError(
                f"LSP embeds at one representation, but layer {layer!r} gives {len(captured)} "
                "per forward (a module called more than once); pick a layer called once"
            )
        prepared = copy.copy(self)
        prepared._captured = captured[0].name
        return prepared

    def term(self, inputs: RegularizerInputs) -> Tensor:
        """λ·L on the step's batch and its captured embedding (:meth:`__call__`)."""
        z = self._one(inputs.select(inputs.clean, self.layers))
        z_adv = inputs.select(inputs.adv, self.layers)
        return self(inputs.x, z, inputs.x_adv, self._one(z_adv) if z_adv is not None else None)

    def _one(self, reps: list[Tensor] | None) -> Tensor:
        if reps is None or len(reps) != 1:
            got = "none" if reps is None else str(len(reps))
            raise InputError(
                f"LSP reads one representation per forward, got {got}; prepare it "
                "(reg.prepare(model, example)) and capture reg.layers with a LayerProbe"
            )
        return reps[0]

    def loss(self, x: Tensor, z: Tensor) -> Tensor:
        """The unweighted L on one set of points (inputs ``x``, embeddings ``z``).

        A batch too small for k neighbours (the last, partial batch of an epoch) uses k = N − 1;
        a batch of one point has no neighbourhood and contributes 0.
        """
        n = x.shape[0]
        if n < 2:
            return z.sum() * 0.0
        k = min(self.k, n - 1) if self.k is not None else None
        if self.variant == "kl":
            return lsp_kl_loss(x, z, bandwidth=self.bandwidth, perplexity=self.perplexity, k=k)
        assert k is not None  # enforced by the constructor
        return lsp_laplacian_loss(x, z, k=k, t=self.t, centered=self.centered)

    def __call__(
        self,
        x: Tensor,
        z: Tensor,
        x_adv: Tensor | None = None,
        z_adv: Tensor | None = None,
    ) -> Tensor:
        """λ·L: a differentiable scalar. ``x_adv``/``z_adv`` are used only with ``on="clean+adv"``.

        Args:
            x: the clean batch (N, …), N ≥ 1, floating point, finite, any value range; moved to
                z's device if it is elsewhere.
            z: its embedding (N, …) with gradient, floating point, finite.
            x_adv: the adversarial batch, x's shape; z_adv: its embedding, z's shape and device.

        Raises:
            InputError: a missing, non-tensor, non-floating, unbatched, empty or non-finite
                argument, or batches whose sizes or shapes disagree (the message names it).
        """
        x = _batch(x, "x", min_points=1, finite_fix=_DATA_FIX)
        z = _batch(z, "z", min_points=1, finite_fix=_EMBEDDING_FIX)
        _check_same_batch(x, z)
        x = x.to(z.device)
        if self.on == "clean+adv":
            if x_adv is None or z_adv is None:
                missing = "x_adv" if x_adv is None else "z_adv"
                raise InputError(
                    f"on='clean+adv' needs the adversarial batch and its embedding; {missing} is "
                    f"missing (use on='clean' without adversarial training)"
                )
            if isinstance(z_adv, Tensor) and z_adv.device != z.device:
                raise InputError(
                    f"z_adv is on {z_adv.device} but z on {z.device}; take both embeddings from "
                    f"the same model"
                )
            x_adv = _batch(x_adv, "x_adv", min_points=1, finite_fix=_ATTACK_FIX)
            z_adv = _batch(z_adv, "z_adv", min_points=1, finite_fix=_EMBEDDING_FIX)
            for name, clean, adv in (("x", x, x_adv), ("z", z, z_adv)):
                if clean.shape != adv.shape:
                    raise InputError(
                        f"{name} has shape {tuple(clean.shape)} but {name}_adv has "
                        f"{tuple(adv.shape)}; the adversarial batch must match the clean one"
                    )
            x = torch.cat([x, x_adv.to(z.device)])
            z = torch.cat([z, z_adv])
        value = self.loss(x, z)
        self.last_loss = value.detach()
        return self.weight * value

    def describe(self) -> dict[str, Any]:
        """JSON-able settings: the variant's options only."""
        settings: dict[str, Any] = {
            "method": "lsp",
            "variant": self.variant,
            "weight": self.weight,
            "layer": self.layer,
            "on": self.on,
            "k": self.k,
        }
        if self.variant == "kl":
            settings.update(bandwidth=self.bandwidth, perplexity=self.perplexity)
        else:
            settings.update(t=self.t, centered=self.centered)
        return settings

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "method")
        return f"LocalStructureRegularizer({settings})"


__all__ = [
    "BANDWIDTH_FLOOR",
    "DEFAULT_BANDWIDTH",
    "DEFAULT_PERPLEXITY",
    "DEFAULT_WEIGHT",
    "LOG_Q_FLOOR",
    "PERPLEXITY_SEARCH_STEPS",
    "Bandwidth",
    "LSPOn",
    "LSPVariant",
    "LocalStructureRegularizer",
    "embedding_affinities",
    "embedding_knn_overlap",
    "input_affinities",
    "knn_indices",
    "knn_overlap",
    "lsp_kl_loss",
    "lsp_laplacian_loss",
    "penultimate_layer",
    "squared_distances",
]
