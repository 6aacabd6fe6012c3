"""User-facing errors.

Every error a user can cause by bad input is an :class:`LsakitError` whose message is one line
naming the problem and the fix. The CLI prints it without a traceback (unless ``--debug``) and
exits with code 2.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Callable


class LsakitError(Exception):
    """Base class: a problem the user can fix. The message is one line: what is wrong, and the fix.

    A message names the caller's arguments as ``{name}`` fields (``"{batch_size} must be ≥ 1,
    got 0"``). ``str()`` writes each as Python spells it (``batch_size``); the command line
    rewrites the error with its flags (``--batch-size``, :meth:`reword`), so a Python caller
    never reads a flag and a shell user never reads a parameter name. Other text is kept as is.

    Args:
        message: the message template (converted with ``str()``), its ``{name}`` fields naming
            the caller's arguments.
        args: further exception arguments, kept after the rendered message in ``args``.
    """

    _FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

    def __init__(self, message: object = "", *args: object) -> None:
        self.template = str(message)
        self.names = tuple(dict.fromkeys(self._FIELD.findall(self.template)))
        super().__init__(self.render(), *args)

    def render(self, word: Callable[[str], str] | None = None) -> str:
        """The message with each ``{name}`` written as ``word(name)`` (default: the name).

        Args:
            word: maps a field's name to the text written in its place (e.g. the CLI's flag);
                None writes the name itself.

        Returns:
            The rendered message, one line.
        """
        return self._FIELD.sub(lambda m: word(m.group(1)) if word else m.group(1), self.template)

    def reword(self, word: Callable[[str], str]) -> None:
        """Write the arguments the message names with ``word`` from now on (the CLI's flags).

        Replaces the message in ``args`` (what ``str()`` shows); the template is kept, so the
        error can be reworded again.

        Args:
            word: maps a field's name to the text written in its place (e.g. ``batch_size`` to
                ``--batch-size``).
        """
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


class LsakitWarning(UserWarning):
    """Base class of lsakit's warnings, each issued through :func:`warn`: shown once per process."""


#: The warnings :func:`warn` has shown: (class, message).
_shown: set[tuple[type[Warning], str]] = set()


def warn(warning: LsakitWarning, stacklevel: int = 1) -> None:
    """Issue ``warning`` as :func:`warnings.warn` does, unless this process has shown it before.

    Where Python's filters would show the warning once per place (``default``, ``once``,
    ``module``: what they do unless told otherwise), it is shown once per process: a second run
    (a notebook cell run again) does not repeat it, although Python's own once-per-place memory
    is reset by every ``warnings.catch_warnings`` of any library (matplotlib, scikit-learn).
    Filters that say ``always``, ``error`` or ``ignore`` (``pytest.warns``, ``-W error``) are
    obeyed on every call.

    Args:
        warning: the warning to issue.
        stacklevel: as :func:`warnings.warn`'s, counted from the caller of this function.
    """
    key = (type(warning), str(warning))
    if _action(warning, stacklevel + 1) in ("default", "once", "module"):
        if key in _shown:
            return
        _shown.add(key)
    warnings.warn(warning, stacklevel=stacklevel + 1)


def _action(warning: Warning, stacklevel: int) -> str:
    """The action of the first of Python's warning filters that matches ``warning`` issued from
    the frame ``stacklevel`` above the caller (as :func:`warnings.warn` matches them)."""
    frame = sys._getframe(1)
    for _ in range(stacklevel - 1):
        frame = frame.f_back or frame
    module = str(frame.f_globals.get("__name__", "<string>"))
    text = str(warning)
    for action, message, category, pattern, lineno in warnings.filters:
        if (
            (message is None or message.match(text))
            and issubclass(type(warning), category)
            and (pattern is None or pattern.match(module))
            and lineno in (0, frame.f_lineno)
        ):
            return str(action)
    return str(getattr(warnings, "defaultaction", "default"))
