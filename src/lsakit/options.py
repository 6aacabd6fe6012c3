"""The command line's options from their one declaration, and the README's option tables.

A training option is a field of :class:`~lsakit.train.TrainConfig`: its type, default and
description are declared there once. ``lsakit train``'s flags take their help text and shown
default from the field (:func:`train_option`), YAML config files set the same fields, and
:func:`option_tables` writes the README's tables from the commands themselves (what ``--help``
shows), so none of them can drift. A default that depends on the data set is shown per preset
(``preset: moons 20, mnist 3, …``, read from :mod:`lsakit.presets`).

    python -m lsakit.options README.md           # rewrite the tables between the markers
    python -m lsakit.options --check README.md   # exit 1 when they are out of date
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import typer
from rich.markup import escape

from lsakit.presets import DEFAULT_DATASET, PRESETS, USER_EPS_PER_WIDTH, USER_TRAIN, Preset
from lsakit.train.config import TrainConfig

BEGIN, END = "<!-- options:begin -->", "<!-- options:end -->"

#: The training ε of the own-data recipe, as its default is shown.
OWN_DATA_EPS = f"{USER_EPS_PER_WIDTH * 255:g}/255 × the domain's width"

#: ``lsakit train`` parameters that set a field of another name (the rest are named as fields).
FIELD_OF_PARAMETER = {
    "model_args": "model_kwargs",
    "data_option": "data_options",
    "domain": "data_options.domain",
}


def _choices(annotation: Any) -> list[str]:
    """The values of a Literal type, also inside ``list[...]`` or ``... | None``."""
    if get_origin(annotation) is Literal:
        return [str(a) for a in get_args(annotation)]
    return [c for arg in get_args(annotation) for c in _choices(arg)]


def _is_list(annotation: Any) -> bool:
    if get_origin(annotation) is list:
        return True
    return get_origin(annotation) in (Union, type(int | None)) and any(
        _is_list(a) for a in get_args(annotation)
    )


def _text(value: Any) -> str:
    """A default as the command line writes it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return ",".join(_text(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return "none" if not value else ", ".join(f"{k}={_text(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.4g}"
    return "none" if value is None else str(value)


def field_help(name: str) -> str:
    """The help of a TrainConfig field as a flag: its description, the choices of its type,
    and ``comma-separated`` for a list."""
    info = TrainConfig.model_fields[name]
    text = info.description or name
    choices = _choices(info.annotation)
    if choices:
        text += f": {', '.join(choices)}"
    if _is_list(info.annotation):
        text += " (comma-separated)"
    if text[0].isascii():
        text = text[0].upper() + text[1:]
    return text + "."


def preset_text(value: Callable[[Preset], Any], own_data: Any) -> str:
    """A preset-dependent default, per data set: ``preset: moons 20, mnist 3, …; own data 10``."""
    values = {name: value(recipe) for name, recipe in PRESETS.items()}
    if len({repr(v) for v in (*values.values(), own_data)}) == 1:
        return f"{_text(own_data)}, every preset's"
    listed = ", ".join(f"{name} {_text(v)}" for name, v in values.items())
    return f"preset: {listed}; own data {_text(own_data)}"


def field_default(name: str) -> str:
    """The default of a TrainConfig field as ``lsakit train`` and a YAML file get it: the data
    set's preset where the presets differ from the library default, else the field's."""
    info = TrainConfig.model_fields[name]
    if name == "dataset":
        return DEFAULT_DATASET
    if name == "model":
        return preset_text(lambda p: p.train.model, "none, give --model")
    if name == "eps":
        return (
            f"adversarial methods: {preset_text(lambda p: p.train_eps, OWN_DATA_EPS)}; standard 0"
        )
    library = info.get_default(call_default_factory=True)
    if any(getattr(recipe.train, name) != library for recipe in PRESETS.values()):
        return preset_text(lambda p: getattr(p.train, name), USER_TRAIN.get(name, library))
    extra = info.json_schema_extra
    if library is None and isinstance(extra, dict) and "none_means" in extra:
        return str(extra["none_means"])
    return _text(library)


def train_option(name: str, *declarations: str, **kwargs: Any) -> Any:
    """The ``typer.Option`` of TrainConfig field ``name``: its help and shown default come from
    the field. The parameter's own default is None: unset options are the preset's."""
    return typer.Option(
        *declarations,
        help=escape(field_help(name)),
        show_default=field_default(name),
        **kwargs,
    )


# -- the README's tables ---------------------------------------------------------------------------
def _cell(text: str) -> str:
    return text.replace("\\[", "[").replace("|", "\\|").replace("\n", " ").strip()


def _flag(param: Any) -> str:
    names = "/".join(param.opts[:1] + param.secondary_opts[:1])
    aliases = ", ".join(f"`{o}`" for o in param.opts[1:])
    return f"`{names}`" + (f" ({aliases})" if aliases else "")


def _default(param: Any) -> str:
    if param.required:
        return "required"
    if isinstance(param.show_default, str):
        return param.show_default
    if param.is_flag and not param.secondary_opts:
        return "off"
    value = param.default
    if param.secondary_opts and isinstance(value, bool):  # --x/--no-x
        return str((param.opts if value else param.secondary_opts)[0])
    return _text(value)


@functools.cache
def _options(command_name: str) -> tuple[Any, ...]:
    from typer.core import TyperOption

    from lsakit.cli import app

    command = typer.main.get_command(app).commands[command_name]  # type: ignore[attr-defined]
    return tuple(p for p in command.params if isinstance(p, TyperOption) and p.name != "help")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def train_flags() -> dict[str, Any]:
    """``lsakit train``'s options by the TrainConfig field each sets (``data_options.domain``
    for --domain); the run's own options (--out, --resume, …) by their parameter name."""
    return {FIELD_OF_PARAMETER.get(p.name, p.name): p for p in _options("train")}


def option_tables() -> str:
    """The Markdown of the README's option tables: ``lsakit train`` (with each option's YAML
    key, and the options only a YAML file sets), ``analyze`` and ``evaluate``."""
    lines = [
        BEGIN,
        "### Options of train, analyze and evaluate",
        "",
        "Generated from the declarations (`python -m lsakit.options README.md`; "
        "tests/test_options.py checks that this copy is current). A `--config` YAML file takes "
        "every training option by its key; flags override it; both start from the data set's "
        "preset (`src/lsakit/presets.py`).",
        "",
        "`lsakit train`:",
        "",
    ]
    rows, covered = [], set()
    for name, param in train_flags().items():
        key = name if name.split(".")[0] in TrainConfig.model_fields else None
        covered.add((key or "").split(".")[0])
        rows.append([_flag(param), f"`{key}`" if key else "—", _default(param), param.help or ""])
    for name in TrainConfig.model_fields:
        if name not in covered:
            rows.append(["—", f"`{name}`", field_default(name), field_help(name)])
    lines += _table(["option", "YAML key", "default", "description"], rows)
    for command in ("analyze", "evaluate"):
        rows = [[_flag(p), _default(p), p.help or ""] for p in _options(command)]
        lines += [
            "",
            f"`lsakit {command}`:",
            "",
            *_table(["option", "default", "description"], rows),
        ]
    return "\n".join([*lines, END])


def update_readme(path: str | Path, *, check: bool = False) -> bool:
    """Write the generated tables between the markers of ``path``; True when they were current
    already. With ``check`` nothing is written."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{p} has no {BEGIN} … {END} section to fill")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    new = text[:start] + option_tables() + text[end:]
    if new == text:
        return True
    if not check:
        p.write_text(new, encoding="utf-8")
    return False


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    paths = [a for a in args if a != "--check"] or ["README.md"]
    stale = [p for p in paths if not update_readme(p, check=check)]
    for p in stale:
        print(f"{p}: option tables {'out of date' if check else 'rewritten'}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
