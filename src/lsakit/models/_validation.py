"""Argument checks for model constructors.

Model arguments usually come from a config file or the command line, so a bad value is a
:class:`~lsakit.errors.ConfigError` (not an ``InputError`` about tensors), with a one-line message
naming the argument and the fix.
"""

from __future__ import annotations

import math

from lsakit.errors import ConfigError


def positive_int(value: object, name: str) -> int:
    """Return ``value`` if it is an integer ≥ 1 (``bool`` is rejected), else raise ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"model argument {name} must be an integer ≥ 1, got {value!r}")
    return value


def dropout_probability(value: object, name: str) -> float:
    """Return ``value`` as a float in [0, 1); p = 1 would zero every activation."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"model argument {name} must be a number in [0, 1), got {value!r}")
    p = float(value)
    if not math.isfinite(p) or not 0.0 <= p < 1.0:
        raise ConfigError(f"model argument {name} must lie in [0, 1), got {value!r}")
    return p
