"""One check per kind of scalar argument (counts, numbers, probabilities, choices, sizes).

Each check returns the value (a ``float`` for the real-valued kinds) or raises
:class:`~lsakit.errors.ArgumentError`, whose one-line message names the argument as a ``{name}``
field, so a Python caller reads ``steps must be an integer ≥ 1, got 0`` and the command line can
render the same error with its flag. ``bool`` is never accepted where a number is meant.

``prefix`` and ``suffix`` are words written around the name, for callers that say more than the
bare argument (``prefix="model argument "``, ``suffix=" of layer L1"``). Tensor checks stay in
:mod:`lsakit._checks` (:class:`~lsakit.errors.InputError`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lsakit.errors import ArgumentError

#: The prefix of the model constructors' messages (``model argument depth must be …``): model
#: arguments come from ``--model-arg`` or a config file, so the message says whose argument it is.
MODEL_ARGUMENT = "model argument "


def _subject(name: str, prefix: str, suffix: str) -> str:
    return f"{prefix}{{{name}}}{suffix}"


def positive_int(value: object, name: str, *, prefix: str = "", suffix: str = "") -> int:
    """``value`` if it is an integer ≥ 1 (counts: steps, restarts, batch sizes, channels)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArgumentError(
            f"{_subject(name, prefix, suffix)} must be an integer ≥ 1, got {value!r}"
        )
    return value


def nonnegative_int(value: object, name: str, *, prefix: str = "", suffix: str = "") -> int:
    """``value`` if it is an integer ≥ 0 (seeds, warm-up epochs)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ArgumentError(
            f"{_subject(name, prefix, suffix)} must be an integer ≥ 0, got {value!r}"
        )
    return value


def number(
    value: object,
    name: str,
    *,
    low: float = -math.inf,
    strict: bool = False,
    prefix: str = "",
    suffix: str = "",
) -> float:
    """``value`` as a float if it is a finite real ≥ ``low`` (> ``low`` when ``strict``)."""
    subject = _subject(name, prefix, suffix)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentError(f"{subject} must be a number, got {value!r}")
    v = float(value)
    bad = v <= low if strict else v < low
    if not math.isfinite(v) or bad:
        bound = f"> {low:g}" if strict else f"≥ {low:g}"
        raise ArgumentError(f"{subject} must be a finite number {bound}, got {value!r}")
    return v


def open_unit(value: object, name: str, *, prefix: str = "", suffix: str = "") -> float:
    """A number strictly inside (0, 1) (a probability whose normal quantile is finite)."""
    v = number(value, name, prefix=prefix, suffix=suffix)
    if not 0.0 < v < 1.0:
        raise ArgumentError(
            f"{_subject(name, prefix, suffix)} must lie strictly between 0 and 1, got {value!r}"
        )
    return v


def fraction(value: object, name: str, *, prefix: str = "", suffix: str = "") -> float:
    """A number in [0, 1): a fraction that must leave something (a dropout probability: p = 1
    would zero every activation)."""
    subject = _subject(name, prefix, suffix)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentError(f"{subject} must be a number in [0, 1), got {value!r}")
    p = float(value)
    if not math.isfinite(p) or not 0.0 <= p < 1.0:
        raise ArgumentError(f"{subject} must lie in [0, 1), got {value!r}")
    return p


def choice(
    value: object, name: str, allowed: Sequence[str], *, prefix: str = "", suffix: str = ""
) -> str:
    """One of ``allowed``; the message lists them."""
    if not isinstance(value, str) or value not in allowed:
        raise ArgumentError(
            f"{_subject(name, prefix, suffix)} must be one of {', '.join(allowed)}, got {value!r}"
        )
    return value


def spatial(value: Sequence[int], name: str = "spatial") -> tuple[int, int]:
    """A spatial size ``(H, W)`` of two integers ≥ 1."""
    items = tuple(value)
    if len(items) != 2:
        raise ArgumentError(f"{{{name}}} must be (height, width), got {value!r}")
    return positive_int(items[0], name, suffix="[0]"), positive_int(items[1], name, suffix="[1]")


__all__ = [
    "MODEL_ARGUMENT",
    "choice",
    "fraction",
    "nonnegative_int",
    "number",
    "open_unit",
    "positive_int",
    "spatial",
]
