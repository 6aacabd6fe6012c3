"""The command line's options from their one declaration, and the README's option tables.

A training option is a field of :class:`~lsakit.train.TrainConfig`: its type, default and
description are declared there once. ``lsakit train``'s flags take their help text and shown
default from the field (:func:`train_option`), YAML config files set the same fields, and
:func:`option_tables` writes the README's tables from the commands themselves (what ``--help``
shows), so none of them can drift. A default that depends on the data set is shown per preset
(``preset: moons 20, mnist 3, …``, read from :mod:`lsakit.config.presets`).

    python -m lsakit.options docs/guide/cli.md   # rewrite the tables between the markers
    python -m lsakit.options --check docs/guide/cli.md   # exit 1 when they are out of date
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import typer

from lsakit.config.help import _text, field_default, field_help
from lsakit.config.train import TrainConfig

BEGIN, END = "<!-- options:begin -->", "<!-- options:end -->"


#: ``lsakit train`` parameters that set a field of another name (the rest are named as fields).
FIELD_OF_PARAMETER = {"domain": "data_options.domain"}


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
        "## Options of train, analyze and evaluate",
        "",
        "Generated from the declarations (`python -m lsakit.options docs/guide/cli.md`; "
        "tests/test_options.py checks that this copy is current). A `--config` YAML file takes "
        "every training option by its key; flags override it; both start from the data set's "
        "preset (`src/lsakit/config/presets.py`).",
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
    paths = [a for a in args if a != "--check"] or ["docs/guide/cli.md"]
    stale = [p for p in paths if not update_readme(p, check=check)]
    for p in stale:
        print(f"{p}: option tables {'out of date' if check else 'rewritten'}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
