"""Comparison measures CM(φ_l(x), φ_l(x̂)) between clean and perturbed layer representations.

The paper (Khalooei et al. 2022, Eq. 11) uses the relative error

    CM(φ_l(x), φ_l(x̂)) = ‖φ_l(x) − φ_l(x̂)‖_F / ‖φ_l(x)‖_F

and its reference code evaluates it with ONE Frobenius norm over the whole batch tensor. Every
measure here is written once, on rows: ``reduction="batch"`` flattens the whole batch into a single
row (the paper's computation), ``"sample"`` uses one row per sample and averages the per-sample
values, ``"none"`` returns the per-sample values.

A value that is undefined — the relative error or cosine distance of an all-zero clean
representation — is never returned as NaN or inf: the public functions raise
:class:`~lsakit.errors.UndefinedMeasureError`, and :func:`measure_rows` reports it in a mask so the
analysis can count and report such samples explicitly.

All functions are plain differentiable torch code, usable as training losses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeAlias

import torch

from lsakit.errors import ConfigError, InputError, UndefinedMeasureError

Reduction: TypeAlias = Literal["batch", "sample", "none"]
REDUCTIONS: tuple[str, ...] = ("batch", "sample", "none")

#: A measure on rows: (clean, perturbed) of shape (R, D) → (values (R,), defined mask (R,)).
_Rows: TypeAlias = tuple[torch.Tensor, torch.Tensor]
RowMeasure: TypeAlias = Callable[[torch.Tensor, torch.Tensor], _Rows]


def _relative_error_rows(clean: torch.Tensor, perturbed: torch.Tensor) -> _Rows:
    """‖a − b‖₂ / ‖a‖₂ per row; undefined where a = 0.

    Rows whose plain norms leave the safe range of the dtype — the squares of tiny activations
    (~1e-22, e.g. late layers of randomly initialised deep nets) underflow in float32, those of
    large ones overflow in float16 — are recomputed from the rows divided by max|a| (the ratio is
    scale-free; the scale is detached, so the gradient is the same). The check costs two
    comparisons; the rescaled pass runs only when some row needs it.
    """
    difference = clean - perturbed
    numerator = torch.linalg.vector_norm(difference, dim=1)
    denominator = torch.linalg.vector_norm(clean, dim=1)
    info = torch.finfo(denominator.dtype)
    low, high = info.tiny**0.5 * 1e4, info.max**0.5 / 1e4
    unsafe = (denominator < low) | (denominator > high) | (numerator > high)
    if bool(unsafe.any()):
        scale = clean.detach().abs().amax(dim=1, keepdim=True)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        rows = unsafe[:, None]
        numerator = torch.where(
            unsafe,
            torch.linalg.vector_norm(torch.where(rows, difference / scale, 0), dim=1),
            numerator,
        )
        denominator = torch.where(
            unsafe,
            torch.linalg.vector_norm(torch.where(rows, clean / scale, 0), dim=1),
            denominator,
        )
    defined = denominator > 0
    return numerator / torch.where(defined, denominator, torch.ones_like(denominator)), defined


def _mse_rows(clean: torch.Tensor, perturbed: torch.Tensor) -> _Rows:
    """Mean squared difference per row; always defined."""
    values = (clean - perturbed).pow(2).mean(dim=1)
    return values, torch.ones_like(values, dtype=torch.bool)


def _cosine_distance_rows(clean: torch.Tensor, perturbed: torch.Tensor) -> _Rows:
    """1 − cos(a, b) per row; undefined where a = 0.

    Where the perturbed row is all zero (and the clean one is not) the similarity is taken as 0,
    i.e. distance 1: a perturbation that wipes out a representation is as dissimilar as orthogonal.
    """
    clean_norm = torch.linalg.vector_norm(clean, dim=1)
    perturbed_norm = torch.linalg.vector_norm(perturbed, dim=1)
    defined = clean_norm > 0
    denominator = clean_norm * perturbed_norm
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    similarity = torch.where(denominator > 0, (clean * perturbed).sum(dim=1) / safe, 0.0)
    return 1.0 - similarity, defined


def _linf_rows(clean: torch.Tensor, perturbed: torch.Tensor) -> _Rows:
    """max |a − b| per row; always defined."""
    values = (clean - perturbed).abs().amax(dim=1)
    return values, torch.ones_like(values, dtype=torch.bool)


#: Registry of measures by name; ``relative_error`` is the paper's and the default.
MEASURES: dict[str, RowMeasure] = {
    "relative_error": _relative_error_rows,
    "mse": _mse_rows,
    "cosine_distance": _cosine_distance_rows,
    "linf": _linf_rows,
}


def check_measure(name: str) -> RowMeasure:
    """The row function of measure ``name``; unknown name → ConfigError listing the known ones."""
    try:
        return MEASURES[name]
    except KeyError:
        raise ConfigError(
            f"unknown measure {name!r}; choose one of {', '.join(MEASURES)}"
        ) from None


def check_reduction(reduction: str) -> str:
    """Validate a reduction name."""
    if reduction not in REDUCTIONS:
        raise ConfigError(f"unknown reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}")
    return reduction


def measure_rows(
    measure: str, clean: torch.Tensor, perturbed: torch.Tensor, reduction: str = "sample"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of a measure and their defined-mask.

    ``reduction="batch"`` gives one row (the whole batch); ``"sample"``/``"none"`` one per sample.
    Undefined values are 0 in ``values`` and False in the mask; callers must use the mask.
    """
    fn = check_measure(measure)
    check_reduction(reduction)
    for name, rep in (("clean", clean), ("perturbed", perturbed)):
        # Cheap type checks only (no reduction, no device sync): this runs every training step.
        if not isinstance(rep, torch.Tensor):
            raise InputError(
                f"the {name} representation must be a torch.Tensor, got {type(rep).__name__}"
            )
        if not rep.is_floating_point():
            raise InputError(
                f"the {name} representation has dtype {rep.dtype}; measures compare floating "
                f"point representations (convert with .float())"
            )
    if clean.shape != perturbed.shape:
        raise InputError(
            f"clean and perturbed representations differ in shape: {tuple(clean.shape)} vs "
            f"{tuple(perturbed.shape)}; compare the same layer on batches of the same shape"
        )
    if clean.dim() == 0 or clean.shape[0] == 0:
        raise InputError("cannot compare empty representations; pass a non-empty batch")
    rows = 1 if reduction == "batch" else clean.shape[0]
    return fn(clean.reshape(rows, -1), perturbed.reshape(rows, -1))


def compare(
    measure: str,
    clean: torch.Tensor,
    perturbed: torch.Tensor,
    reduction: Reduction = "batch",
) -> torch.Tensor:
    """Measure ``measure`` between two representations: a scalar, or (N,) for ``"none"``.

    Raises UndefinedMeasureError rather than returning NaN/inf when a value is undefined.

    Args:
        measure: the measure's name, a key of :data:`MEASURES` (``"relative_error"``, ``"mse"``,
            ``"cosine_distance"``, ``"linf"``).
        clean: the clean representation φ(x), a floating-point tensor ``(N, …)``, N ≥ 1.
        perturbed: the perturbed representation φ(x̂), shaped like ``clean``.
        reduction: ``"batch"`` (the paper's) flattens the whole batch into one row;
            ``"sample"`` averages the per-sample values; ``"none"`` returns them.

    Returns:
        A differentiable 0-d tensor, or the per-sample values ``(N,)`` for ``"none"``.
    """
    values, defined = measure_rows(measure, clean, perturbed, reduction)
    if not bool(defined.all()):
        # Checked only here, on the failure path: NaN/inf rows are undefined too, but "all zero"
        # would misname their cause.
        if not (bool(torch.isfinite(clean).all()) and bool(torch.isfinite(perturbed).all())):
            raise InputError(
                f"{measure} is undefined: the representations contain NaN or inf values; check "
                f"the model and its inputs"
            )
        bad = int((~defined).sum())
        what = (
            "the batch's clean representation is"
            if reduction == "batch"
            else (f"{bad} of {defined.numel()} samples have a clean representation that is")
        )
        raise UndefinedMeasureError(
            f"{measure} is undefined: {what} all zero; use measure='mse' or 'linf', or "
            f"exclude this layer"
        )
    if reduction == "none":
        return values
    return values.mean() if reduction == "sample" else values[0]


def relative_error(
    clean: torch.Tensor, perturbed: torch.Tensor, reduction: Reduction = "batch"
) -> torch.Tensor:
    """‖φ(x) − φ(x̂)‖_F / ‖φ(x)‖_F (Khalooei et al. 2022, Eq. 11); see the module docstring.

    Undefined (UndefinedMeasureError) where the clean row is all zero.

    Args:
        clean: the clean representation φ(x), a floating-point tensor ``(N, …)``, N ≥ 1.
        perturbed: the perturbed representation φ(x̂), shaped like ``clean``.
        reduction: ``"batch"`` (the paper's) flattens the whole batch into one row;
            ``"sample"`` averages the per-sample values; ``"none"`` returns them.

    Returns:
        A differentiable 0-d tensor, or the per-sample values ``(N,)`` for ``"none"``.
    """
    return compare("relative_error", clean, perturbed, reduction)


def mse(
    clean: torch.Tensor, perturbed: torch.Tensor, reduction: Reduction = "batch"
) -> torch.Tensor:
    """Mean squared difference between the representations.

    Args:
        clean: the clean representation φ(x), a floating-point tensor ``(N, …)``, N ≥ 1.
        perturbed: the perturbed representation φ(x̂), shaped like ``clean``.
        reduction: ``"batch"`` (the paper's) flattens the whole batch into one row;
            ``"sample"`` averages the per-sample values; ``"none"`` returns them.

    Returns:
        A differentiable 0-d tensor, or the per-sample values ``(N,)`` for ``"none"``.
    """
    return compare("mse", clean, perturbed, reduction)


def cosine_distance(
    clean: torch.Tensor, perturbed: torch.Tensor, reduction: Reduction = "batch"
) -> torch.Tensor:
    """1 − cosine similarity between the (flattened) representations.

    Undefined (UndefinedMeasureError) where the clean row is all zero; an all-zero perturbed row
    has distance 1.

    Args:
        clean: the clean representation φ(x), a floating-point tensor ``(N, …)``, N ≥ 1.
        perturbed: the perturbed representation φ(x̂), shaped like ``clean``.
        reduction: ``"batch"`` (the paper's) flattens the whole batch into one row;
            ``"sample"`` averages the per-sample values; ``"none"`` returns them.

    Returns:
        A differentiable 0-d tensor, or the per-sample values ``(N,)`` for ``"none"``.
    """
    return compare("cosine_distance", clean, perturbed, reduction)


def linf_distance(
    clean: torch.Tensor, perturbed: torch.Tensor, reduction: Reduction = "batch"
) -> torch.Tensor:
    """Largest absolute difference between the representations (L∞ of the difference).

    Args:
        clean: the clean representation φ(x), a floating-point tensor ``(N, …)``, N ≥ 1.
        perturbed: the perturbed representation φ(x̂), shaped like ``clean``.
        reduction: ``"batch"`` (the paper's) flattens the whole batch into one row;
            ``"sample"`` averages the per-sample values; ``"none"`` returns them.

    Returns:
        A differentiable 0-d tensor, or the per-sample values ``(N,)`` for ``"none"``.
    """
    return compare("linf", clean, perturbed, reduction)
