"""One declaration per option: a typed field that the Python API, YAML files and the CLI read.

A workflow's options are a pydantic model (:class:`Options`). Each field is declared once with
:func:`option`: its type, its default, its help text and its command-line flags. From that one
declaration

- the workflow in :mod:`lsakit.workflows` takes the field as a keyword argument and validates it
  (:meth:`Options.build`), before any work;
- ``lsakit COMMAND`` derives its flags (:mod:`lsakit.cli._derive`), with ``--config FILE`` (a YAML
  file of the same fields) and ``--print-config``;
- the README's option tables are generated (:mod:`lsakit.options`).

Errors name the caller's words: a bad value raises :class:`~lsakit.errors.ArgumentError`, whose
message names the field as Python spells it (``batch_size``) and which the CLI rewrites with the
field's flag (``--batch-size``).
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lsakit.errors import ArgumentError, ConfigError

#: How the command line writes a field: ``value`` (one flag, one value), ``repeat`` (a repeatable
#: flag, a list), ``key_value`` (repeatable ``KEY=VALUE``, each VALUE read as YAML, a mapping),
#: ``comma`` (one comma-separated value, a list), ``layers`` (a layer selection, comma-separated),
#: ``argument`` (positional).
Kind = Literal["value", "repeat", "key_value", "comma", "layers", "argument"]


def option(
    default: Any,
    help: str,
    *flags: str,
    show_default: str | None = None,
    kind: Kind | None = None,
) -> Any:
    """Declare an option: a pydantic field carrying its help, flags and command-line form.

    Args:
        default: the default (the Python API's and the CLI's alike).
        help: the help text (``--help``, the README's tables).
        flags: the flags, e.g. ``"--dataset", "-d"``; ``"--x/--no-x"`` for a switch. Default:
            ``--field-name``.
        show_default: the default as ``--help`` shows it, where the value itself says too little
            (``None`` that means "the preset's").
        kind: how the command line writes the value (:data:`Kind`; default ``comma`` for a
            list, else ``value``).
    """
    extra = {"flags": list(flags) or None, "show_default": show_default, "kind": kind}
    extra = {key: value for key, value in extra.items() if value is not None}
    return Field(default, description=help, json_schema_extra=extra)  # type: ignore[arg-type]


def _extra(info: Any) -> dict[str, Any]:
    extra = info.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def flags(cls: type[BaseModel], name: str) -> list[str]:
    """The command-line flags of field ``name``: as declared, else ``--field-name`` (with
    ``--no-field-name`` for a switch); ``[]`` declares a field no flag sets (YAML only)."""
    info = cls.model_fields[name]
    declared = _extra(info).get("flags")
    if declared is not None:
        return list(declared)
    flag = f"--{name.replace('_', '-')}"
    if info.annotation in (bool, bool | None):
        return [f"{flag}/--no-{name.replace('_', '-')}"]
    return [flag]


def kind(cls: type[BaseModel], name: str) -> str:
    """How the command line writes field ``name`` (:data:`Kind`, or ``layers``: a layer
    selection, comma-separated, ``default`` for none): as declared, else ``comma`` for a list."""
    info = cls.model_fields[name]
    declared = _extra(info).get("kind")
    if declared is not None:
        return str(declared)
    annotation = info.annotation
    if get_origin(annotation) is list or any(get_origin(a) is list for a in get_args(annotation)):
        return "comma"
    return "value"


def show_default(cls: type[BaseModel], name: str) -> str | None:
    """The default of field ``name`` as ``--help`` shows it, where declared."""
    value = _extra(cls.model_fields[name]).get("show_default")
    return None if value is None else str(value)


def split_layers(text: str | None) -> list[str] | None:
    """A layer selection as the command line writes it: comma-separated names, ``name#k``,
    globs, ``L<k>`` or ``type:ClassName``; None (the default activations) for ``default``."""
    if text is None or text.strip().lower() in ("", "default", "activations"):
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def from_text(cls: type[BaseModel], name: str, text: str) -> Any:
    """A ``comma`` or ``layers`` field's command-line text as its value: the list of items
    (one item for a field that also takes a single value, e.g. ``gamma: 0.5``)."""
    if kind(cls, name) == "layers":
        return split_layers(text)
    items = [part.strip() for part in text.split(",") if part.strip()]
    annotation = cls.model_fields[name].annotation
    members = get_args(annotation) if get_origin(annotation) is not list else ()
    scalar = [a for a in members if a is not type(None) and get_origin(a) is not list]
    return items[0] if len(items) == 1 and scalar else items


def item_words(annotation: Any) -> str:
    """What a comma-separated list of ``annotation`` holds, in words (``numbers``)."""
    for arg in get_args(annotation) or (annotation,):
        if get_origin(arg) is list:
            item = get_args(arg)[0]
            return {int: "integers", float: "numbers"}.get(item, "names")
    return "values"


def _first_problem(error: ValidationError) -> tuple[str, str, Any]:
    problem = error.errors()[0]
    loc = [str(part) for part in problem["loc"]]
    return (loc[0] if loc else ""), problem["msg"], problem.get("input")


class Options(BaseModel):
    """Base of a workflow's options: frozen, unknown names refused, each field one option."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @classmethod
    def build(cls, values: Mapping[str, Any] | None = None, **more: Any) -> Self:
        """The options from keyword values, validated; a bad one raises ArgumentError naming it.

        ``comma`` fields also take their command-line text (``"0.1,0.3"``).
        """
        given = {**(values or {}), **more}
        unknown = [k for k in given if k not in cls.model_fields]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(cls.model_fields), n=1)
            hint = f"did you mean {{{close[0]}}}?" if close else "see the options' list"
            raise ArgumentError(f"unknown option {unknown[0]!r}; {hint}")
        for name, value in list(given.items()):
            if isinstance(value, str) and kind(cls, name) in ("comma", "layers"):
                given[name] = from_text(cls, name, value)
        try:
            options = cls(**given)
        except ValidationError as error:
            name, message, value = _first_problem(error)
            if name in cls.model_fields and kind(cls, name) == "comma":
                words = item_words(cls.model_fields[name].annotation)
                text = values.get(name) if values and name in values else more.get(name)
                raise ArgumentError(
                    f"{{{name}}} takes comma-separated {words}, got {text!r}"
                ) from None
            field = f"{{{name}}}" if name in cls.model_fields else "an option"
            if error.errors()[0]["type"] == "missing":
                raise ArgumentError(f"{field} is required") from None
            raise ArgumentError(
                f"{field}: {message[0].lower()}{message[1:]}, got {value!r}"
            ) from None
        options.check()
        return options

    def check(self) -> None:
        """Checks across fields and of values (ArgumentError); run by :meth:`build`."""

    def given(self) -> dict[str, Any]:
        """The options set explicitly (by a flag, a YAML file or a keyword), by name: what a
        workflow is called with, so that the rest take its defaults."""
        return {name: getattr(self, name) for name in self.model_fields_set}

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> Self:
        """The options of a YAML file (fields by name), with ``overrides`` on top."""
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {p} not found") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{p} is not valid YAML: {error}".splitlines()[0]) from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p} must hold a mapping of options, got {type(loaded).__name__}")
        return cls.build({**loaded, **overrides})

    def to_yaml(self) -> str:
        """Every option as YAML, which :meth:`from_yaml` reads back to the same options."""
        text: str = yaml.safe_dump(
            self.model_dump(mode="json"), sort_keys=False, allow_unicode=True
        )
        return text


def is_optional(annotation: Any) -> bool:
    """Whether ``annotation`` admits None."""
    return get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in get_args(
        annotation
    )
