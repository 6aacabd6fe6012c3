"""The sparsity half of RSR: lasso penalties, magnitude pruning and masks that stay applied.

Robust Sparse Regularization (Rakin, He, Yang, Wang, Wang & Fan, 2019, arXiv:1905.13074) trains
with channel-wise noise injection (:mod:`lsakit.defenses.noise`), adversarial training and a
lasso penalty on the weights, then keeps the network compact. Only the abstract was available;
the objective and the pruning recipe below are *(inferred)* (spec part C):

* penalty: λ₁·Σ_l ‖W_l‖₁ (:func:`lasso_penalty`), optionally + λ_g·Σ_l Σ_c ‖W_{l,c}‖₂ over output
  channels c (:func:`group_lasso_penalty`), over the weights of every ``nn.Conv2d`` / ``nn.Linear``
  (the PNI layers included); α, biases and normalization parameters are excluded. λ₁ in
  1e-5 … 5e-4 (:data:`DEFAULT_LASSO` = 1e-4, the spec's MNIST setting);
* then magnitude-prune to a target sparsity, globally or per layer (:func:`magnitude_masks`), and
  fine-tune with the masks fixed (:func:`apply_masks`).

Choices (not in the sources):

* *which weights*: the ``weight`` of every module that is an ``nn.Conv2d`` or ``nn.Linear``
  (subclasses included), the first and the last layer too; nothing else is pruned or penalized.
* *how many*: k = ⌊s·n + ½⌋ weights are zeroed (n weights in scope, s the target): the exact
  target up to rounding half up.
* *ties*: weights are ranked by |w| with a stable sort over the scope in ``named_modules()``
  order, each weight row-major, so among equal magnitudes the earlier weight is pruned first —
  the same masks on every run and every device. Weights already zero rank lowest, so pruning a
  pruned model again keeps its zeros (iterative pruning).
* *how masks survive training*: a mask is a bool buffer ``<module>.weight_mask`` (so it is in
  the ``state_dict`` and round-trips through checkpoints with nothing else to save) and the
  weights are re-zeroed after every optimizer step by :func:`enforce_masks`, which
  :func:`enforce_masks_after_steps` attaches to an optimizer as a step post-hook. Masking
  gradients or the forward instead is not enough: SGD momentum and Adam's moments accumulated
  before pruning move a weight whose gradient is zero, and a forward-pre-hook leaves the stored
  tensor non-zero after each step (so the saved file and :func:`sparsity_report` would be wrong);
  re-zeroing after the step is exact for any element-wise optimizer. Element-wise optimizers (SGD,
  Adam, AdamW, RMSprop, …) never let a masked entry influence a kept one; the Adam state of
  masked entries is wasted but harmless.
* PNI noise on a pruned weight is masked as well (:class:`~lsakit.defenses.noise.NoiseInjection`
  reads the same buffer): a pruned connection does not exist, so it carries no noise.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, TypeVar, get_args

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lsakit._checks import check_nonnegative, check_probability
from lsakit.errors import ConfigError, InputError
from lsakit.validate import choice

if TYPE_CHECKING:
    from lsakit.train.regularizers import RegularizerInputs

#: Name of the transform that recreates the mask buffers when a checkpoint is loaded.
MASKS: Final = "masks"
#: Name of the bool buffer holding a layer's mask (True = kept, False = pruned).
MASK_BUFFER: Final = "weight_mask"
#: Layers whose ``weight`` is penalized and pruned.
PRUNABLE_TYPES: Final = (nn.Conv2d, nn.Linear)
#: Default λ₁ of the lasso term (spec: 1e-5 … 5e-4; 1e-4 in its MNIST variant).
DEFAULT_LASSO: Final = 1e-4

Scope = Literal["global", "per_layer"]
_SCOPES: tuple[str, ...] = get_args(Scope)

_T = TypeVar("_T")


def as_setting(check: Callable[[Any, str], _T], value: Any, name: str) -> _T:
    """Run a :mod:`lsakit._checks` check on a *setting*: its InputError becomes a ConfigError."""
    try:
        return check(value, name)
    except InputError as err:
        raise ConfigError(str(err)) from None


# ----------------------------------------------------------------------------------- the scope


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every ``nn.Conv2d`` / ``nn.Linear`` in ``named_modules()`` order.

    Args:
        model: the model (an ``nn.Module``, else InputError).

    Returns:
        ``(name, module)`` pairs of the conv/linear layers, subclasses (PNI layers) included;
        empty when there is none.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]


def _layers_or_fail(model: nn.Module, what: str) -> list[tuple[str, nn.Module]]:
    layers = prunable_layers(model)
    if not layers:
        raise ConfigError(
            f"{type(model).__name__} has no nn.Conv2d or nn.Linear layer, so there is nothing "
            f"to {what}; use a model with convolutional or linear layers"
        )
    return layers


def _weight(module: nn.Module) -> Tensor:
    weight = module.weight
    assert isinstance(weight, Tensor)  # guaranteed for Conv2d / Linear
    return weight


# ----------------------------------------------------------------------------------- penalties


def lasso_penalty(model: nn.Module) -> Tensor:
    """Σ_l ‖W_l‖₁ over the conv/linear weights: RSR's lasso term *(inferred)*, differentiable.

    Biases, PNI's α and normalization parameters are not included. Returns a 0-d tensor on the
    weights' device; multiply by λ₁ yourself (or use :class:`SparsityRegularizer`).

    Args:
        model: the model; ConfigError when it has no conv/linear layer.

    Returns:
        Σ_l ‖W_l‖₁, a 0-d tensor with gradient to the weights.
    """
    layers = _layers_or_fail(model, "penalize")
    return torch.stack([_weight(m).abs().sum() for _, m in layers]).sum()


def group_lasso_penalty(model: nn.Module) -> Tensor:
    """Σ_l Σ_c ‖W_{l,c}‖₂, c the output channels (rows of a linear weight): RSR's optional
    channel-sparsity term *(inferred)*. An all-zero channel contributes 0 with gradient 0.

    Args:
        model: the model; ConfigError when it has no conv/linear layer.

    Returns:
        Σ_l Σ_c ‖W_{l,c}‖₂, a 0-d tensor on the weights' device with gradient to the weights.
    """
    layers = _layers_or_fail(model, "penalize")
    return torch.stack(
        [torch.linalg.vector_norm(_weight(m).flatten(1), ord=2, dim=1).sum() for _, m in layers]
    ).sum()


class SparsityRegularizer:
    """λ₁·Σ_l ‖W_l‖₁ + λ_g·Σ_l Σ_c ‖W_{l,c}‖₂: the sparsity terms of the RSR objective *(inferred)*.

    Args:
        lasso: λ₁ ≥ 0, default :data:`DEFAULT_LASSO` (1e-4).
        group_lasso: λ_g ≥ 0, default 0 (off).

    Example::

        reg = SparsityRegularizer(lasso=1e-4)
        loss, _, _ = pni_ensemble_loss(model, x, y, attack)
        (loss + reg(model)).backward()

    As a :class:`~lsakit.train.regularizers.Regularizer` (the trainer's list) it reads no
    representations: :meth:`term` is the penalty on the step's bare model.
    """

    name: ClassVar[str] = "sparsity"

    def __init__(self, *, lasso: float = DEFAULT_LASSO, group_lasso: float = 0.0) -> None:
        self.lasso = as_setting(check_nonnegative, lasso, "lasso")
        self.group_lasso = as_setting(check_nonnegative, group_lasso, "group_lasso")

    def __call__(self, model: nn.Module) -> Tensor:
        """The penalty on ``model``'s current weights (a differentiable 0-d tensor)."""
        value = self.lasso * lasso_penalty(model)
        if self.group_lasso > 0:
            value = value + self.group_lasso * group_lasso_penalty(model)
        return value

    @property
    def layers(self) -> list[str]:
        """None: a penalty of the weights alone."""
        return []

    def prepare(self, model: nn.Module, example: Tensor) -> SparsityRegularizer:
        """Itself: nothing to resolve.

        Args:
            model: the model to be trained (not read).
            example: an example batch (not read).

        Returns:
            This regularizer.
        """
        return self

    def term(self, inputs: RegularizerInputs) -> Tensor:
        """The penalty on the step's model (the bare module inside any wrapper).

        Args:
            inputs: the training step's inputs; only ``inputs.module`` is read.

        Returns:
            ``self(inputs.module)``: the weighted penalty, a differentiable 0-d tensor.
        """
        return self(inputs.module)

    def describe(self) -> dict[str, Any]:
        """JSON-able settings: lasso, group_lasso.

        Returns:
            ``{"lasso": λ₁, "group_lasso": λ_g}``.
        """
        return {"lasso": self.lasso, "group_lasso": self.group_lasso}

    def __repr__(self) -> str:
        return f"SparsityRegularizer(lasso={self.lasso!r}, group_lasso={self.group_lasso!r})"


# ------------------------------------------------------------------------------------- pruning


def pruned_count(sparsity: float, total: int) -> int:
    """How many of ``total`` weights a target ``sparsity`` zeroes: ⌊s·n + ½⌋ (round half up)."""
    return min(total, math.floor(sparsity * total + 0.5))


def _keep_mask(magnitudes: Tensor, sparsity: float) -> Tensor:
    """Flat bool mask keeping all but the ⌊s·n + ½⌋ smallest entries (stable: earlier first)."""
    order = torch.sort(magnitudes, stable=True).indices
    keep = torch.ones(magnitudes.numel(), dtype=torch.bool, device=magnitudes.device)
    keep[order[: pruned_count(sparsity, magnitudes.numel())]] = False
    return keep


def magnitude_masks(
    model: nn.Module, sparsity: float, scope: Scope = "global"
) -> dict[str, Tensor]:
    """Masks pruning the smallest-magnitude conv/linear weights to a target ``sparsity``.

    Args:
        model: the model; its weights are read, not changed.
        sparsity: fraction s ∈ [0, 1] of weights to zero.
        scope: ``"global"`` ranks all weights together (layers end up with different
            sparsities); ``"per_layer"`` zeroes the fraction s of each layer.

    Returns:
        ``{module name: bool mask}`` (True = kept) for every conv/linear layer, each mask shaped
        and placed like the layer's weight. Exactly ⌊s·n + ½⌋ entries are False, n counted over
        the scope; ties are broken by position (see the module docstring).
    """
    value = as_setting(check_probability, sparsity, "sparsity")
    choice(scope, "scope", _SCOPES)
    layers = _layers_or_fail(model, "prune")
    magnitudes: list[Tensor] = []
    for name, module in layers:
        weight = _weight(module).detach()
        if not bool(torch.isfinite(weight).all()):
            raise InputError(
                f"layer {name!r} has NaN or inf weights; magnitudes cannot rank them — fix the "
                f"training run before pruning"
            )
        magnitudes.append(weight.abs().flatten())
    if scope == "per_layer":
        flat = [_keep_mask(m, value) for m in magnitudes]
    else:
        keep_all = _keep_mask(torch.cat(magnitudes), value)
        flat = list(torch.split(keep_all, [m.numel() for m in magnitudes]))
    return {
        name: keep.reshape(_weight(module).shape)
        for (name, module), keep in zip(layers, flat, strict=True)
    }


def _named_module(name: str, named: Mapping[str, nn.Module]) -> nn.Module:
    if name not in named:
        close = difflib.get_close_matches(name, [n for n in named if n], n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see model.named_modules()"
        raise ConfigError(f"unknown layer {name!r} in masks: {hint}")
    module = named[name]
    if not isinstance(module, PRUNABLE_TYPES):
        raise ConfigError(
            f"layer {name!r} is a {type(module).__name__}; masks apply to nn.Conv2d and "
            f"nn.Linear weights only"
        )
    return module


def apply_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> nn.Module:
    """Prune ``model`` in place: register each mask as buffer ``<layer>.weight_mask``, zero weights.

    A layer's previous mask, if any, is replaced. Layers not in ``masks`` are left as they are.
    Keep the zeros through training with :func:`enforce_masks_after_steps` (or call
    :func:`enforce_masks` after each optimizer step). Returns ``model``.

    Args:
        model: the model, pruned in place (the masks are copied onto the weights' devices).
        masks: a non-empty ``{layer name: bool mask}`` (True = kept) for conv/linear layers,
            each mask shaped like the layer's weight, e.g. from :func:`magnitude_masks`.

    Returns:
        ``model`` itself.
    """
    if not isinstance(masks, Mapping) or not masks:
        raise InputError("masks must be a non-empty mapping {layer name: bool tensor}")
    named = dict(model.named_modules())
    checked: list[tuple[nn.Module, Tensor]] = []
    for name, mask in masks.items():
        module = _named_module(name, named)
        weight = _weight(module)
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            what = f"dtype {mask.dtype}" if isinstance(mask, Tensor) else type(mask).__name__
            raise InputError(f"mask of {name!r} is {what}; masks are bool tensors (True = kept)")
        if mask.shape != weight.shape:
            raise InputError(
                f"mask of {name!r} has shape {tuple(mask.shape)} but the weight has "
                f"{tuple(weight.shape)}; build masks with magnitude_masks(model, ...)"
            )
        checked.append((module, mask))
    for module, mask in checked:
        weight = _weight(module)
        module.register_buffer(MASK_BUFFER, mask.detach().to(weight.device).clone())
    enforce_masks(model)
    return model


def masked_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the layers carrying a ``weight_mask`` buffer.

    Args:
        model: the model to search.

    Returns:
        ``(name, module)`` pairs in ``named_modules()`` order (empty for an unpruned model).
    """
    return [
        (name, m)
        for name, m in model.named_modules()
        if dict(m.named_buffers(recurse=False)).get(MASK_BUFFER) is not None
    ]


def enforce_masks(model: nn.Module) -> None:
    """Re-zero every masked weight (call after each optimizer step; a no-op without masks).

    Args:
        model: the model whose masked weights are zeroed in place (without gradient).
    """
    with torch.no_grad():
        for _, module in masked_layers(model):
            mask = getattr(module, MASK_BUFFER)
            _weight(module).masked_fill_(~mask, 0.0)


def enforce_masks_after_steps(
    optimizer: torch.optim.Optimizer, model: nn.Module
) -> RemovableHandle:
    """Attach :func:`enforce_masks` to every ``optimizer.step()``; ``handle.remove()`` detaches it.

    Attach it again to a new optimizer (e.g. after loading a checkpoint); the masks themselves
    live in the model.

    Args:
        optimizer: the optimizer that updates the model's weights.
        model: the model whose masks are enforced after each step (read at every step, so
            masks applied later are enforced too).

    Returns:
        The hook's handle; ``handle.remove()`` detaches it.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise InputError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        enforce_masks(model)

    return optimizer.register_step_post_hook(hook)


def add_mask_buffers(model: nn.Module, state_keys: Iterable[str]) -> list[str]:
    """Register an all-True ``weight_mask`` buffer for every ``<layer>.weight_mask`` key.

    The checkpoint transform ``"masks"``: it gives a freshly built model the buffers a saved state
    dict holds, so ``load_state_dict`` can fill them. Returns the layer names given a buffer.

    Args:
        model: the freshly built model, given the buffers in place.
        state_keys: the keys of the saved state dict; a ``<layer>.weight_mask`` key must name
            a conv/linear layer of ``model`` (else ConfigError).

    Returns:
        The names of the layers given a buffer, in the order of ``state_keys`` (``""`` for the
        root module).
    """
    suffix = "." + MASK_BUFFER
    named = dict(model.named_modules())
    names = [
        key[: -len(suffix)] if key.endswith(suffix) else ""
        for key in state_keys
        if key.endswith(suffix) or key == MASK_BUFFER
    ]
    for name in names:
        module = _named_module(name, named)
        weight = _weight(module)
        module.register_buffer(
            MASK_BUFFER, torch.ones(weight.shape, dtype=torch.bool, device=weight.device)
        )
    return names


# -------------------------------------------------------------------------------------- report


def sparsity_report(model: nn.Module) -> dict[str, Any]:
    """Zeros actually present in the conv/linear weights (``weight == 0``), per layer and overall.

    Args:
        model: the model; ConfigError when it has no conv/linear layer.

    Returns:
        ``{"layers": {name: {"zeros", "total", "sparsity"}}, "zeros", "total", "sparsity"}``
        (JSON-able; ``sparsity`` = zeros / total).
    """
    layers: dict[str, dict[str, Any]] = {}
    zeros_all = total_all = 0
    for name, module in _layers_or_fail(model, "report on"):
        weight = _weight(module).detach()
        zeros, total = int((weight == 0).sum()), weight.numel()
        layers[name] = {"zeros": zeros, "total": total, "sparsity": zeros / total if total else 0.0}
        zeros_all += zeros
        total_all += total
    return {
        "layers": layers,
        "zeros": zeros_all,
        "total": total_all,
        "sparsity": zeros_all / total_all if total_all else 0.0,
    }


__all__ = [
    "DEFAULT_LASSO",
    "MASKS",
    "MASK_BUFFER",
    "PRUNABLE_TYPES",
    "Scope",
    "SparsityRegularizer",
    "add_mask_buffers",
    "apply_masks",
    "as_setting",
    "enforce_masks",
    "enforce_masks_after_steps",
    "group_lasso_penalty",
    "lasso_penalty",
    "magnitude_masks",
    "masked_layers",
    "prunable_layers",
    "pruned_count",
    "sparsity_report",
]
