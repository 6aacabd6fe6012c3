"""Options as their help shows them: a TrainConfig field's help text and its default, per
data set where the presets differ (``preset: moons 20, mnist 3, …``, read from
:mod:`lsakit.config.presets`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Union, get_args, get_origin

from lsakit.config.presets import DEFAULT_DATASET, PRESETS, USER_EPS_PER_WIDTH, USER_TRAIN, Preset
from lsakit.config.train import TrainConfig

#: Help texts several commands share.
DATA_DIR_HELP = "Data directory."
DATA_DIR_DEFAULT = "$LSAKIT_DATA, else ~/.cache/lsakit/data"
DEVICE_HELP = "auto, cpu, cuda or cuda:N."
DOMAIN_HELP = "Input domain of a tensor-file data set: LOW,HIGH, unit or unbounded."
DOMAIN_DEFAULT = "the file's domain field, else 0,1"

#: The training ε of the own-data recipe, as its default is shown.
OWN_DATA_EPS = f"{USER_EPS_PER_WIDTH * 255:g}/255 × the domain's width"


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
    if isinstance(extra, dict) and "show_default" in extra:
        return str(extra["show_default"])
    if library is None and isinstance(extra, dict) and "none_means" in extra:
        return str(extra["none_means"])
    return _text(library)
