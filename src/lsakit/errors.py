"""User-facing errors.

Every error a user can cause by bad input is an :class:`LsakitError` whose message is one line
naming the problem and the fix. The CLI prints it without a traceback (unless ``--debug``) and
exits with code 2.
"""

from __future__ import annotations

import re
from collections.abc import Callable


class LsakitError(Exception):
    """Base class: a problem the user can fix. The message is one line: what is wrong, and the fix.

    A message names the caller's arguments as ``{name}`` fields (``"{batch_size} must be ≥ 1,
    got 0"``). ``str()`` writes each as Python spells it (``batch_size``); the command line
    rewrites the error with its flags (``--batch-size``, :meth:`reword`), so a Python caller
    never reads a flag and a shell user never reads a parameter name. Other text is kept as is.
    """

    _FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

    def __init__(self, message: object = "", *args: object) -> None:
        self.template = str(message)
        self.names = tuple(dict.fromkeys(self._FIELD.findall(self.template)))
        super().__init__(self.render(), *args)

    def render(self, word: Callable[[str], str] | None = None) -> str:
        """The message with each ``{name}`` written as ``word(name)`` (default: the name)."""
        return self._FIELD.sub(lambda m: word(m.group(1)) if word else m.group(1), self.template)

    def reword(self, word: Callable[[str], str]) -> None:
        """Write the arguments the message names with ``word`` from now on (the CLI's flags)."""
        self.args = (self.render(word), *self.args[1:])


class InputError(LsakitError, ValueError):
    """Bad tensors or arguments at the API boundary (shape, dtype, range, NaN, ε < 0, …)."""


class ConfigError(LsakitError, ValueError):
    """Unknown names (model, data set, layer, perturbation) or invalid option values."""


class ArgumentError(ConfigError):
    """A bad argument of a call (a workflow's option, a function's parameter), named in the
    caller's words as ``{name}`` fields (see :class:`LsakitError`)."""


class DataError(LsakitError):
    """Data files missing, corrupt, or failing their checksum."""


class CheckpointError(LsakitError):
    """A checkpoint or results file that is missing, truncated, tampered with or incompatible."""


class UndefinedMeasureError(LsakitError, ArithmeticError):
    """A comparison measure is undefined, e.g. relative error of an all-zero clean representation."""


class ResultsError(LsakitError):
    """A results file (e.g. ``lsa.json``) that is missing, truncated or not valid."""
