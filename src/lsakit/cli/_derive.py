"""Command-line options derived from a typed config: each field one flag (its help, shown
default, flags and form from the field's one declaration, :mod:`lsakit.config.options`), plus
``--config`` and ``--print-config``."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Optional, get_args

import typer
from pydantic import BaseModel
from rich.markup import escape

from lsakit.config import options as decl
from lsakit.errors import ConfigError, LsakitError


def _cli_type(cls: type[BaseModel], name: str) -> Any:
    """The type typer parses field ``name`` as."""
    annotation = cls.model_fields[name].annotation
    form = decl.kind(cls, name)
    if form in ("repeat", "key_value"):
        return list[str] | None
    if form in ("comma", "layers"):
        return str | None
    if form == "argument":
        return Optional[annotation]  # noqa: UP045 (a runtime type, not an annotation)
    args = [a for a in get_args(annotation) if a is not type(None)] or [annotation]
    base = args[0] if len(args) == 1 else str  # several types: the command line's text
    return base | None


def parameters(
    cls: type[BaseModel],
    *,
    fields: list[str] | None = None,
    help_of: Callable[[str], str] | None = None,
    shown_of: Callable[[str], str] | None = None,
    unset: bool = False,
) -> list[inspect.Parameter]:
    """The typer parameters of ``cls``'s fields that have flags.

    Args:
        fields: which fields (default: every field with flags), in this order.
        help_of: a field's help (default: its description).
        shown_of: a field's default as shown (default: the declared ``show_default``, else the
            default itself).
        unset: every parameter defaults to None (the default comes from elsewhere: a preset).
    """
    params = []
    for name in fields or list(cls.model_fields):
        if not decl.flags(cls, name):
            continue  # set in a YAML file only
        info = cls.model_fields[name]
        if info.is_required() or unset:
            default: Any = None  # required: the --config file may give it (build() checks)
        else:
            default = info.get_default(call_default_factory=True)
        if isinstance(default, (list, dict)):  # typer's default for a repeatable flag is None
            default = None
        shown: str | bool = (shown_of(name) if shown_of else decl.show_default(cls, name)) or (
            "required" if info.is_required() else True
        )
        text = escape(help_of(name) if help_of else (info.description or name))
        if decl.kind(cls, name) == "argument":
            declared: Any = typer.Argument(help=text, metavar=name.upper())
        else:
            declared = typer.Option(*decl.flags(cls, name), help=text, show_default=shown)
        annotation = Annotated[_cli_type(cls, name), declared]  # type: ignore[valid-type]
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
            )
        )
    return params


def given_values(
    cls: type[BaseModel], ctx: typer.Context, values: Mapping[str, Any]
) -> dict[str, Any]:
    """The fields the command line set (not left at their defaults), as the config reads them:
    ``KEY=VALUE`` lists as mappings, comma-separated text as lists."""
    given: dict[str, Any] = {}
    for name, value in values.items():
        source = ctx.get_parameter_source(name)
        if name not in cls.model_fields or source is None or source.name != "COMMANDLINE":
            continue
        form = decl.kind(cls, name)
        if form == "key_value":
            value = key_values(value, decl.flags(cls, name)[0])
        elif form in ("comma", "layers") and not issubclass(cls, decl.Options):
            value = decl.from_text(cls, name, value)  # (Options.build reads the text itself)
        given[name] = value
    return given


def key_values(items: list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs of a repeatable flag; each VALUE read as YAML (numbers, lists, …)."""
    import yaml

    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} takes KEY=VALUE, got {item!r}")
        try:
            parsed[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"{flag} {key.strip()}: cannot read {text!r}") from None
    return parsed


@contextlib.contextmanager
def flag_words(*classes: type[BaseModel], extra: Mapping[str, str] | None = None) -> Iterator[None]:
    """Rewrite an error that names arguments (``{name}`` fields, :class:`LsakitError`) with the
    command's flags: fields of ``classes``, then ``extra`` (argument → flag)."""
    try:
        yield
    except LsakitError as error:
        if error.names:

            def word(name: str) -> str:
                for cls in classes:
                    if name in cls.model_fields and decl.kind(cls, name) == "argument":
                        return name.upper()
                    if name in cls.model_fields and decl.flags(cls, name):
                        return decl.flags(cls, name)[0].split("/")[0]
                return (extra or {}).get(name, name)

            error.reword(word)
        raise


def config_parameters(what: str = "these options") -> list[inspect.Parameter]:
    """``--config FILE`` and ``--print-config``."""
    return [
        inspect.Parameter(
            "config_file", inspect.Parameter.KEYWORD_ONLY, default=None,
            annotation=Annotated[Path | None, typer.Option(
                "--config", help=f"YAML file with any of {what} by name (flags override it; "
                "--print-config writes one).", show_default="none")],
        ),
        inspect.Parameter(
            "print_config", inspect.Parameter.KEYWORD_ONLY, default=False,
            annotation=Annotated[bool, typer.Option(
                "--print-config", help="Print the options as YAML and exit (runs nothing).")],
        ),
    ]  # fmt: skip


def command(
    app: typer.Typer,
    name: str,
    params: list[inspect.Parameter],
    body: Callable[..., None],
    doc: str,
) -> None:
    """Register ``lsakit NAME`` whose parameters are ``params`` (after the click context);
    ``body(ctx, **values)`` runs it."""

    def run(ctx: typer.Context, **values: Any) -> None:
        body(ctx, **values)

    context = inspect.Parameter(
        "ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context
    )
    signature = [context, *params]
    run.__signature__ = inspect.Signature(signature)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in signature}
    run.__doc__ = doc
    run.__name__ = f"{name}_command"
    app.command(name)(run)


def options_command(
    app: typer.Typer,
    name: str,
    cls: type[decl.Options],
    run: Callable[[Any], None],
    doc: str,
) -> None:
    """Register ``lsakit NAME``: one flag per field of ``cls``, ``--config FILE`` (YAML of the
    same fields; flags override it) and ``--print-config`` (the options as YAML, then exit).
    ``run`` gets the validated options."""

    def body(ctx: typer.Context, **values: Any) -> None:
        config_file: Path | None = values.pop("config_file")
        print_config: bool = values.pop("print_config")
        with flag_words(cls):
            given = given_values(cls, ctx, values)
            options = cls.from_yaml(config_file, **given) if config_file else cls.build(given)
        if print_config:
            typer.echo(options.to_yaml(), nl=False)
            return
        with flag_words(cls):
            run(options)

    command(app, name, [*parameters(cls), *config_parameters()], body, doc)
