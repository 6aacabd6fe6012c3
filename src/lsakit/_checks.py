"""Input validation shared by every stage that takes tensors from a user.

Each check raises :class:`~lsakit.errors.InputError` with a one-line message naming the problem
and the fix. Checks are cheap reductions; they run once per call, never inside attack iterations.
Counts, choices and other scalar settings are checked by :mod:`lsakit.validate`
(:class:`~lsakit.errors.ArgumentError`).
"""

from __future__ import annotations

import math

import torch

from lsakit.domain import current_domain
from lsakit.errors import InputError

#: The default input domain [0, 1] (see :mod:`lsakit.domain` for declaring another one).
INPUT_LOW = 0.0
INPUT_HIGH = 1.0


def check_inputs(x: object, name: str = "x") -> torch.Tensor:
    """Check a batch of model inputs: a non-empty floating tensor, finite, inside the declared
    input domain (:func:`lsakit.domain.current_domain`; [0, 1] unless declared otherwise)."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise InputError(
            f"{name} has dtype {x.dtype}; inputs must be floating point "
            f"(convert with x.float() / 255 for 8-bit images)"
        )
    if x.dim() < 2:
        raise InputError(
            f"{name} has shape {tuple(x.shape)}; expected a batch (N, ...) with N first — "
            f"add a batch dimension with x.unsqueeze(0)"
        )
    if x.shape[0] == 0:
        raise InputError(
            f"{name} is an empty batch (shape {tuple(x.shape)}); pass at least one sample"
        )
    if not bool(torch.isfinite(x).all()):
        raise InputError(
            f"{name} contains NaN or inf values; clean the data before analysis or attack"
        )
    current_domain().check(x, name)
    return x


def check_labels(
    y: object, n: int, name: str = "y", num_classes: int | None = None
) -> torch.Tensor:
    """Check integer class labels of shape (n,), optionally in ``[0, num_classes)``."""
    if not isinstance(y, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise InputError(
            f"{name} has dtype {y.dtype}; labels must be integer class indices (y.long())"
        )
    if y.shape != (n,):
        raise InputError(
            f"{name} has shape {tuple(y.shape)}; expected ({n},), one label per sample"
        )
    if num_classes is not None and n > 0:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise InputError(
                f"{name} has labels in [{lo}, {hi}] but the model has {num_classes} classes; "
                f"labels must lie in [0, {num_classes - 1}]"
            )
    return y


def check_nonnegative(value: float, name: str) -> float:
    """Check a finite real number ≥ 0 (ε, step sizes, noise strengths)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise InputError(f"{name} must be a finite number ≥ 0, got {value!r}")
    return v


def check_probability(value: float, name: str) -> float:
    """Check a number in [0, 1] (noise amounts, proportions)."""
    v = check_nonnegative(value, name)
    if v > 1:
        raise InputError(f"{name} must lie in [0, 1], got {value!r}")
    return v
