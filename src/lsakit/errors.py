"""User-facing errors.

Every error a user can cause by bad input is an :class:`LsakitError` whose message is one line
naming the problem and the fix. The CLI prints it without a traceback (unless ``--debug``) and
exits with code 2.
"""

from __future__ import annotations


class LsakitError(Exception):
    """Base class: a problem the user can fix. The message is one line: what is wrong, and the fix."""


class InputError(LsakitError, ValueError):
    """Bad tensors or arguments at the API boundary (shape, dtype, range, NaN, ε < 0, …)."""


class ConfigError(LsakitError, ValueError):
    """Unknown names (model, data set, layer, perturbation) or invalid option values."""


class DataError(LsakitError):
    """Data files missing, corrupt, or failing their checksum."""


class CheckpointError(LsakitError):
    """A checkpoint or results file that is missing, truncated, tampered with or incompatible."""


class UndefinedMeasureError(LsakitError, ArithmeticError):
    """A comparison measure is undefined, e.g. relative error of an all-zero clean representation."""


class ResultsError(LsakitError):
    """A results file (e.g. ``lsa.json``) that is missing, truncated or not valid."""
