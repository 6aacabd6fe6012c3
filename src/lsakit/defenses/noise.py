"""PNI: parametric noise injection on the weights (He, Rakin & Fan, CVPR 2019).

Every convolutional and linear layer computes with a noisy copy of its weight,

    w̃ = w + α ⊙ η,   η ~ N(0, σ_w²),   σ_w = std(w) over the whole weight tensor,

with a learnable channel-wise scale α — shape (C_out, 1, 1, 1) for a convolution, (out, 1) for a
linear layer — initialized to 0.25 (PNI's "channelwise" variant, the one RSR builds on). η is
drawn afresh at every forward pass from torch's global generator (so
:func:`~lsakit._torch.seed_everything` makes runs repeatable) and is a constant for autograd:
σ_w is computed on the detached weight, hence ∂L/∂w = ∂L/∂w̃ and ∂L/∂α = Σ ∂L/∂w̃ · η.

Following PNI (and the spec), the noise is on in training *and* in eval mode — at test time and
while an attack is generated, otherwise α is not trained against the attack it meets and
diverges. :func:`noise_disabled` switches it off for the "noise off at test" comparison; each
layer's ``noise_enabled`` attribute is the switch. α must get no weight decay (it would drive
α → 0): build the optimizer from :func:`parameter_groups`.

:func:`pni_ensemble_loss` is PNI's adversarial-training loss, 0.5·CE(f(x), y) + 0.5·CE(f(x̂), y),
where the attack is labelled with the model's own clean predictions (no label leaking).

Choices (not in the sources):

* :func:`add_noise_injection` converts layers in place by switching their class (as
  ``torch.nn.utils.parametrize`` does), so the module objects, their names, order, hooks and
  buffers stay and the ``state_dict`` only gains ``<layer>.alpha``. Only layers whose type is
  exactly ``nn.Conv2d`` or ``nn.Linear`` are converted: subclasses may compute differently
  (``nn.MultiheadAttention``'s output projection reads its weight without calling forward).
* σ_w uses the unbiased standard deviation (``Tensor.std()``, as PNI's code); a weight with a
  single entry has no spread and gets σ_w = 0 (no noise) instead of NaN.
* only weights are perturbed (PNI's default ``w_noise``; no activation noise).
* a pruned weight (``weight_mask`` buffer, :mod:`lsakit.defenses.sparsity`) gets no noise.
* :func:`parameter_groups` also exempts biases and normalization parameters from weight decay
  (common practice; PNI's code decays them — pass ``exclude_bias_and_norm=False`` for that).
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable, Iterator
from typing import Any, Final, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lsakit._checks import check_inputs, check_labels, check_nonnegative
from lsakit._outputs import select_logits
from lsakit._torch import model_device
from lsakit.defenses.sparsity import MASK_BUFFER, as_setting
from lsakit.errors import ConfigError, InputError
from lsakit.perturb.base import Attack

#: Name of the transform that re-adds the noise layers when a checkpoint is loaded.
NOISE_INJECTION: Final = "noise_injection"
#: Initial value of every α (PNI, channel-wise variant).
DEFAULT_ALPHA_INIT: Final = 0.25
#: Weight of each of the two cross-entropies of PNI's ensemble loss.
ENSEMBLE_WEIGHT: Final = 0.5
#: Name of the noise-scale parameter in each converted layer (state-dict key ``<layer>.alpha``).
ALPHA: Final = "alpha"

#: Normalization layers, whose parameters :func:`parameter_groups` exempts from weight decay.
NORM_TYPES: Final = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.GroupNorm,
    nn.LayerNorm,
)


def sample_weight_noise(weight: Tensor, mask: Tensor | None = None) -> Tensor:
    """η ~ N(0, σ_w²) shaped like ``weight``, σ_w = std(weight) detached; zero where ``mask`` is False.

    Draws ``torch.randn`` from the global generator with the weight's dtype and device. The
    result carries no graph.

    Args:
        weight: the weight tensor (any shape; a single entry gets σ_w = 0, no noise).
        mask: optional bool tensor shaped like ``weight`` (True = kept, as the ``weight_mask``
            buffer); η is 0 where it is False.

    Returns:
        η, shaped like ``weight``, with its dtype and device, detached.
    """
    with torch.no_grad():
        w = weight.detach()
        sigma = w.std() if w.numel() > 1 else w.new_zeros(())
        eta = torch.randn(w.shape, dtype=w.dtype, device=w.device) * sigma
        if mask is not None:
            eta = eta.masked_fill(~mask, 0.0)
    return eta


class NoiseInjection(nn.Module):
    """What the noisy layers share: α, the on/off switch and w̃ = w + α ⊙ η.

    Attributes:
        alpha: the channel-wise noise scale (learnable; no weight decay).
        noise_enabled: ``True`` (default, also in eval mode) to inject noise at each forward.
    """

    weight: Tensor
    alpha: nn.Parameter
    noise_enabled: bool

    def _init_noise(self, alpha_init: float) -> None:
        w = self.weight
        shape = (w.shape[0],) + (1,) * (w.dim() - 1)
        self.alpha = nn.Parameter(torch.full(shape, alpha_init, dtype=w.dtype, device=w.device))
        self.noise_enabled = True

    def noisy_weight(self) -> Tensor:
        """w̃ = w + α ⊙ η with a fresh η (or ``weight`` itself when the noise is off).

        Returns:
            w̃, shaped like ``weight`` and differentiable in the weight and α (η is a constant,
            0 on pruned entries); the ``weight`` parameter itself when ``noise_enabled`` is
            False.
        """
        if not self.noise_enabled:
            return self.weight
        mask = dict(self.named_buffers(recurse=False)).get(MASK_BUFFER)
        return self.weight + self.alpha * sample_weight_noise(self.weight, mask)

    def extra_repr(self) -> str:
        """The layer's settings in its ``repr``: the base layer's, then the noise switch.

        Returns:
            The base layer's ``extra_repr()`` followed by ``, noise=on`` or ``, noise=off``.
        """
        return f"{super().extra_repr()}, noise={'on' if self.noise_enabled else 'off'}"


class NoisyConv2d(NoiseInjection, nn.Conv2d):
    """``nn.Conv2d`` with PNI weight noise; α has shape (C_out, 1, 1, 1).

    Takes ``nn.Conv2d``'s arguments plus keyword ``alpha_init`` (default 0.25, ≥ 0).

    Args:
        args: ``nn.Conv2d``'s positional arguments (``in_channels``, ``out_channels``,
            ``kernel_size``, …).
        alpha_init: initial α ≥ 0 of every output channel (keyword only; a bad value raises
            ConfigError).
        kwargs: ``nn.Conv2d``'s keyword arguments (``stride``, ``padding``, ``bias``, ``device``,
            ``dtype``, …).
    """

    def __init__(self, *args: Any, alpha_init: float = DEFAULT_ALPHA_INIT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_noise(_check_alpha_init(alpha_init))

    def forward(self, input: Tensor) -> Tensor:
        """The convolution with the noisy weight w̃ (:meth:`noisy_weight`) and the bias.

        Args:
            input: a batch ``(N, C_in, H, W)`` (or an unbatched ``(C_in, H, W)``).

        Returns:
            The output ``(N, C_out, H_out, W_out)``, as ``nn.Conv2d`` computes it.
        """
        output: Tensor = self._conv_forward(input, self.noisy_weight(), self.bias)
        return output


class NoisyLinear(NoiseInjection, nn.Linear):
    """``nn.Linear`` with PNI weight noise; α has shape (out_features, 1).

    Takes ``nn.Linear``'s arguments plus keyword ``alpha_init`` (default 0.25, ≥ 0).

    Args:
        args: ``nn.Linear``'s positional arguments (``in_features``, ``out_features``, …).
        alpha_init: initial α ≥ 0 of every output feature (keyword only; a bad value raises
            ConfigError).
        kwargs: ``nn.Linear``'s keyword arguments (``bias``, ``device``, ``dtype``).
    """

    def __init__(self, *args: Any, alpha_init: float = DEFAULT_ALPHA_INIT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_noise(_check_alpha_init(alpha_init))

    def forward(self, input: Tensor) -> Tensor:
        """The linear map with the noisy weight w̃ (:meth:`noisy_weight`) and the bias.

        Args:
            input: a tensor ``(…, in_features)``.

        Returns:
            The output ``(…, out_features)``.
        """
        return F.linear(input, self.noisy_weight(), self.bias)


_NOISY: Final[dict[type[nn.Module], type[NoiseInjection]]] = {
    nn.Conv2d: NoisyConv2d,
    nn.Linear: NoisyLinear,
}


def _check_alpha_init(value: float) -> float:
    return as_setting(check_nonnegative, value, "alpha_init")


# ------------------------------------------------------------------------------- model surgery


def add_noise_injection(
    model: nn.Module,
    *,
    alpha_init: float = DEFAULT_ALPHA_INIT,
    layers: Iterable[str] | None = None,
) -> nn.Module:
    """Turn every ``nn.Conv2d`` / ``nn.Linear`` of ``model`` into its PNI layer, in place.

    Weights, names, module order, hooks and buffers are kept (the modules change class, not
    identity); each converted layer gains ``alpha`` (filled with ``alpha_init``, on the weight's
    device and dtype) and injects noise from now on. Layers that are already noisy are left as
    they are, so a second call changes nothing.

    Args:
        model: the model (converted in place and returned).
        alpha_init: initial α ≥ 0 (PNI: 0.25).
        layers: module names to convert (default: every exact ``nn.Conv2d`` / ``nn.Linear``).

    Returns:
        ``model`` itself, converted in place.

    Raises:
        ConfigError: a bad ``alpha_init``; an unknown layer name or one that is not a plain
            conv/linear layer; a model with nothing to convert.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    value = _check_alpha_init(alpha_init)
    named = dict(model.named_modules())
    if layers is None:
        chosen = [m for m in named.values() if type(m) in _NOISY]
        if not chosen and not any(isinstance(m, NoiseInjection) for m in named.values()):
            raise ConfigError(
                f"{type(model).__name__} has no nn.Conv2d or nn.Linear layer to inject noise "
                f"into; use a model with convolutional or linear layers"
            )
    else:
        chosen = [_convertible(name, named) for name in _names(layers)]
    for module in chosen:
        if isinstance(module, NoiseInjection):
            continue
        # Switching the class keeps the object (and every reference to it) intact.
        module.__class__ = _NOISY[type(module)]
        cast(NoiseInjection, module)._init_noise(value)
    return model


def _names(layers: Iterable[str]) -> list[str]:
    if isinstance(layers, str):
        return [layers]
    names = list(layers)
    if not names:
        raise ConfigError("layers= is empty; pass None to convert every conv/linear layer")
    return names


def _convertible(name: object, named: dict[str, nn.Module]) -> nn.Module:
    if not isinstance(name, str) or name not in named:
        raise ConfigError(f"unknown layer {name!r}; see model.named_modules()")
    module = named[name]
    if not isinstance(module, NoiseInjection) and type(module) not in _NOISY:
        raise ConfigError(
            f"layer {name!r} is a {type(module).__name__}; noise injection converts plain "
            f"nn.Conv2d and nn.Linear layers only"
        )
    return module


def add_noise_injection_from_keys(model: nn.Module, state_keys: Collection[str]) -> list[str]:
    """Convert exactly the layers that have an ``<layer>.alpha`` entry in ``state_keys``.

    The checkpoint transform ``"noise_injection"``: a freshly built model gets the noise layers of
    the saved one (α is then loaded from the file). Keys of other modules that happen to own an
    ``alpha`` are ignored. Returns the converted layer names.

    Args:
        model: the freshly built model, converted in place.
        state_keys: the keys of the saved state dict.

    Returns:
        The names of the layers with an ``alpha`` key (those already noisy included), in
        ``named_modules()`` order; ``[]`` when there is none and nothing is converted.
    """
    suffix = "." + ALPHA
    named = dict(model.named_modules())
    names = [
        name
        for name, module in named.items()
        if (f"{name}{suffix}" if name else ALPHA) in state_keys
        and (isinstance(module, NoiseInjection) or type(module) in _NOISY)
    ]
    if names:
        add_noise_injection(model, layers=names)
    return names


def noise_layers(model: nn.Module) -> list[tuple[str, NoiseInjection]]:
    """``(name, layer)`` of every PNI layer, in ``named_modules()`` order.

    Args:
        model: the model to search.

    Returns:
        ``(name, layer)`` pairs of the :class:`NoiseInjection` modules (empty for a plain model).
    """
    return [(n, m) for n, m in model.named_modules() if isinstance(m, NoiseInjection)]


def noise_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The α of every PNI layer (the parameters that must get no weight decay).

    Args:
        model: the model to search.

    Returns:
        The ``alpha`` parameters, in :func:`noise_layers` order.
    """
    return [layer.alpha for _, layer in noise_layers(model)]


@contextlib.contextmanager
def noise_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Switch the noise of every PNI layer off; restore each layer's own flag on exit, error or
    not. A model without PNI layers is unaffected.

    Args:
        model: the model whose PNI layers are switched off for the block.

    Yields:
        ``model`` itself.
    """
    layers = [layer for _, layer in noise_layers(model)]
    previous = [layer.noise_enabled for layer in layers]
    for layer in layers:
        layer.noise_enabled = False
    try:
        yield model
    finally:
        for layer, enabled in zip(layers, previous, strict=True):
            layer.noise_enabled = enabled


def parameter_groups(
    model: nn.Module, weight_decay: float, *, exclude_bias_and_norm: bool = True
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: ``[decay, no_decay]``, α always in ``no_decay``.

    Args:
        model: the model.
        weight_decay: the decay of the first group (the second has 0).
        exclude_bias_and_norm: also put biases and the parameters of normalization layers
            (BatchNorm, GroupNorm, LayerNorm, InstanceNorm) in ``no_decay``.

    Returns:
        ``[{"name": "decay", "params": [...], "weight_decay": wd}, no_decay]``, the second
        group alike with ``"name": "no_decay"`` and ``"weight_decay": 0.0`` — every parameter of
        the model exactly once (either list may be empty); pass to any ``torch.optim`` optimizer.
    """
    decay_value = as_setting(check_nonnegative, weight_decay, "weight_decay")
    if not isinstance(exclude_bias_and_norm, bool):
        raise ConfigError(
            f"exclude_bias_and_norm must be true or false, got {exclude_bias_and_norm!r}"
        )
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            exempt = (isinstance(module, NoiseInjection) and name == ALPHA) or (
                exclude_bias_and_norm and (name == "bias" or isinstance(module, NORM_TYPES))
            )
            (no_decay if exempt else decay).append(param)
    return [
        {"name": "decay", "params": decay, "weight_decay": decay_value},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]


# ------------------------------------------------------------------------------- the loss


def pni_ensemble_loss(
    model: nn.Module, x: Tensor, y: Tensor, attack: Attack
) -> tuple[Tensor, Tensor, Tensor]:
    """PNI's adversarial-training loss: 0.5·CE(f(x), y) + 0.5·CE(f(x̂), y).

    One clean forward in the model's current (training) mode gives the clean logits; the attack
    is then run with the model's own predictions argmax f(x) as labels — not ``y``, which would
    leak the label into x̂ (He et al. 2019, Sec. 4; PNI's ``train``). The attack runs the model in
    eval mode, where PNI noise stays on. Last, one training forward on x̂.

    Args:
        model: the classifier being trained.
        x: inputs (N, …) in [0, 1].
        y: true labels (N,).
        attack: an lsakit attack built on ``model`` (e.g. ``PGD(model, eps=..., steps=...)``);
            its ``output`` selector also picks the logits of the training forwards.

    Returns:
        ``(loss, logits_clean, logits_adv)``; the loss is differentiable with respect to the
        parameters (α included), the logits are those of the two training forwards.
    """
    if not isinstance(attack, Attack):
        raise ConfigError(
            f"attack must be an lsakit Attack (e.g. PGD(model, eps=...)), got {type(attack).__name__}"
        )
    if attack.model is not model:
        raise ConfigError(
            "the attack was built on another model; build it on the model being trained, "
            "e.g. PGD(model, eps=...)"
        )
    check_inputs(x.detach(), "x")
    check_labels(y, x.shape[0], "y")
    device = model_device(model)
    x, y = x.detach().to(device), y.to(device)
    logits_clean = select_logits(model(x), attack.output)
    if logits_clean.dim() != 2 or logits_clean.shape[0] != x.shape[0]:
        raise InputError(
            f"the model's logits have shape {tuple(logits_clean.shape)}; expected "
            f"(N, classes) = ({x.shape[0]}, C) — fix the attack's output= or the model's head"
        )
    check_labels(y, x.shape[0], "y", num_classes=logits_clean.shape[1])
    predicted = logits_clean.detach().argmax(dim=1)
    x_adv = attack(x, predicted)
    logits_adv = select_logits(model(x_adv), attack.output)
    loss = ENSEMBLE_WEIGHT * F.cross_entropy(logits_clean, y) + ENSEMBLE_WEIGHT * F.cross_entropy(
        logits_adv, y
    )
    return loss, logits_clean, logits_adv


__all__ = [
    "ALPHA",
    "DEFAULT_ALPHA_INIT",
    "ENSEMBLE_WEIGHT",
    "NOISE_INJECTION",
    "NORM_TYPES",
    "NoiseInjection",
    "NoisyConv2d",
    "NoisyLinear",
    "add_noise_injection",
    "add_noise_injection_from_keys",
    "noise_disabled",
    "noise_layers",
    "noise_parameters",
    "parameter_groups",
    "pni_ensemble_loss",
    "sample_weight_noise",
]
