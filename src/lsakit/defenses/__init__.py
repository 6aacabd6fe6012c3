"""Defenses that change the model itself: PNI noise injection and sparsity (the blocks of RSR).

Robust Sparse Regularization (Rakin et al. 2019, arXiv:1905.13074) fuses channel-wise noise
injection (PNI, He, Rakin & Fan, CVPR 2019; :mod:`lsakit.defenses.noise`), a lasso weight penalty
and adversarial training, then prunes by magnitude and fine-tunes with fixed masks
(:mod:`lsakit.defenses.sparsity`). A typical run::

    model = add_noise_injection(models.build("model_b"))
    optimizer = torch.optim.SGD(parameter_groups(model, 5e-4), lr=0.01, momentum=0.9)
    attack = PGD(model, eps=0.3, alpha=0.01, steps=10)
    penalty = SparsityRegularizer(lasso=1e-4)
    loss, _, _ = pni_ensemble_loss(model, x, y, attack)
    (loss + penalty(model)).backward(); optimizer.step()
    ...
    apply_masks(model, magnitude_masks(model, 0.85))       # then fine-tune:
    enforce_masks_after_steps(optimizer, model)

Both defenses add state to the model (``<layer>.alpha`` parameters, ``<layer>.weight_mask``
buffers). A checkpoint records them by name — :func:`model_transforms` — and
:func:`lsakit.checkpoint.load_checkpoint` re-applies :data:`TRANSFORMS` to the freshly built model
before loading the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Final

from torch import nn

from lsakit.defenses.noise import (
    ALPHA,
    DEFAULT_ALPHA_INIT,
    ENSEMBLE_WEIGHT,
    NOISE_INJECTION,
    NoiseInjection,
    NoisyConv2d,
    NoisyLinear,
    add_noise_injection,
    add_noise_injection_from_keys,
    noise_disabled,
    noise_layers,
    noise_parameters,
    parameter_groups,
    pni_ensemble_loss,
    sample_weight_noise,
)
from lsakit.defenses.sparsity import (
    DEFAULT_LASSO,
    MASK_BUFFER,
    MASKS,
    SparsityRegularizer,
    add_mask_buffers,
    apply_masks,
    enforce_masks,
    enforce_masks_after_steps,
    group_lasso_penalty,
    lasso_penalty,
    magnitude_masks,
    masked_layers,
    prunable_layers,
    sparsity_report,
)

#: A transform gives a freshly built model the structure a saved state dict needs; it receives
#: the state dict's keys and changes the model in place.
Transform = Callable[[nn.Module, Collection[str]], object]

#: The transforms a checkpoint may name, in their canonical order (noise before masks).
TRANSFORMS: Final[dict[str, Transform]] = {
    NOISE_INJECTION: add_noise_injection_from_keys,
    MASKS: add_mask_buffers,
}


def model_transforms(model: nn.Module) -> list[str]:
    """The transforms ``model`` carries, in canonical order: ``"noise_injection"`` if it has PNI
    layers, ``"masks"`` if any layer has a ``weight_mask`` buffer; ``[]`` for a plain model.

    Args:
        model: the model to inspect (not changed).

    Returns:
        The names (keys of :data:`TRANSFORMS`) of the transforms the model carries.
    """
    found = {NOISE_INJECTION: bool(noise_layers(model)), MASKS: bool(masked_layers(model))}
    return [name for name in TRANSFORMS if found[name]]


__all__ = [
    "ALPHA",
    "DEFAULT_ALPHA_INIT",
    "DEFAULT_LASSO",
    "ENSEMBLE_WEIGHT",
    "MASKS",
    "MASK_BUFFER",
    "NOISE_INJECTION",
    "TRANSFORMS",
    "NoiseInjection",
    "NoisyConv2d",
    "NoisyLinear",
    "SparsityRegularizer",
    "Transform",
    "add_mask_buffers",
    "add_noise_injection",
    "add_noise_injection_from_keys",
    "apply_masks",
    "enforce_masks",
    "enforce_masks_after_steps",
    "group_lasso_penalty",
    "lasso_penalty",
    "magnitude_masks",
    "masked_layers",
    "model_transforms",
    "noise_disabled",
    "noise_layers",
    "noise_parameters",
    "parameter_groups",
    "pni_ensemble_loss",
    "prunable_layers",
    "sample_weight_noise",
    "sparsity_report",
]
