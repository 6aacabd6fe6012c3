"""Argument checks for the architecture-search settings.

Search and network settings come from a config file or the command line, so a bad value is a
:class:`~lsakit.errors.ConfigError` with a one-line message naming the setting and the fix (tensor
problems stay :class:`~lsakit.errors.InputError`, raised by :mod:`lsakit._checks`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lsakit.errors import ConfigError


def positive_int(value: object, name: str) -> int:
    """Return ``value`` if it is an integer ≥ 1 (``bool`` is rejected), else raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an integer ≥ 1, got {value!r}")
    return value


def nonnegative_int(value: object, name: str) -> int:
    """Return ``value`` if it is an integer ≥ 0 (``bool`` is rejected), else raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an integer ≥ 0, got {value!r}")
    return value


def number(value: object, name: str, *, low: float = -math.inf, strict: bool = False) -> float:
    """A finite real ≥ ``low`` (> ``low`` when ``strict``), else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    v = float(value)
    bad = v <= low if strict else v < low
    if not math.isfinite(v) or bad:
        bound = f"> {low:g}" if strict else f"≥ {low:g}"
        raise ConfigError(f"{name} must be a finite number {bound}, got {value!r}")
    return v


def open_unit(value: object, name: str) -> float:
    """A number strictly inside (0, 1) (a probability whose normal quantile is finite)."""
    v = number(value, name)
    if not 0.0 < v < 1.0:
        raise ConfigError(f"{name} must lie strictly between 0 and 1, got {value!r}")
    return v


def choice(value: object, name: str, allowed: Sequence[str]) -> str:
    """One of ``allowed``, else ConfigError listing them."""
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def spatial(value: Sequence[int], name: str = "spatial") -> tuple[int, int]:
    """A spatial size ``(H, W)`` of two integers ≥ 1."""
    items = tuple(value)
    if len(items) != 2:
        raise ConfigError(f"{name} must be (height, width), got {value!r}")
    return positive_int(items[0], f"{name}[0]"), positive_int(items[1], f"{name}[1]")
