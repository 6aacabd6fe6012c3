"""Models from outside the registry: torchvision, timm, transformers, and your own code.

A model *spec* is one string, the value of ``--model``:

=================================  ==========================================================
spec                               what is built
=================================  ==========================================================
``model_b``                        a registry model (:mod:`lsakit.models`)
``torchvision:NAME``               ``torchvision.models.get_model(NAME, weights=None, **kw)``
``timm:NAME``                      ``timm.create_model(NAME, pretrained=False, **kw)``
``hf:DIR`` or ``hf:FILE.json``     a transformers classifier from a local ``config.json``
                                   (``AutoModelFor…Classification.from_config``), wrapped so
                                   its forward returns the logits tensor (:class:`HFClassifier`)
``package.module:factory``         ``factory(**kw)`` from an importable module
``path/to/file.py:factory``        ``factory(**kw)`` from a Python file
=================================  ==========================================================

``kw`` are the model arguments (``--model-arg KEY=VALUE``). Every model is built with random
weights: nothing is ever downloaded (no ``weights=``/``pretrained=``/hub names), and a
transformers config is read from the local file only, never with remote code. Weights come from
``--checkpoint`` (a plain state dict, or an lsakit checkpoint).

For ``hf:`` the model arguments are ``task`` (``image-classification``,
``sequence-classification`` or ``audio-classification``; default: read from the config's
``architectures``) and any config attribute to override (e.g. ``num_labels=10``). A sequence
classifier takes float inputs as ``inputs_embeds`` (N, L, hidden), integer inputs as
``input_ids``. An lsakit checkpoint of an ``hf:`` model stores the whole config, so it loads
without the directory.

A factory spec runs the user's code, so an lsakit checkpoint that names one is loaded only when
the caller names the same spec (``--model``): a checkpoint file alone never makes lsakit import
code (see :func:`lsakit.checkpoint.load_checkpoint`).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import json
import keyword
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Literal, TypeAlias

import torch
from torch import nn

from lsakit._io import one_line
from lsakit._outputs import select_logits
from lsakit.errors import ConfigError

Kind: TypeAlias = Literal["registry", "torchvision", "timm", "hf", "module", "file"]

#: Prefixes of the ecosystems, with the package each needs and how to install it.
ECOSYSTEMS: Final[dict[str, tuple[str, str]]] = {
    "torchvision": ("torchvision", "pip install torchvision (the build matching your torch)"),
    "timm": ("timm", "pip install 'lsakit[timm]' (timm needs torchvision)"),
    "hf": ("transformers", "pip install 'lsakit[hf]'"),
}
#: Tasks of ``hf:`` models → the transformers auto class that builds them.
HF_TASKS: Final[dict[str, str]] = {
    "image-classification": "AutoModelForImageClassification",
    "sequence-classification": "AutoModelForSequenceClassification",
    "audio-classification": "AutoModelForAudioClassification",
}
_HF_TASK_ALIASES: Final = {"text-classification": "sequence-classification"}
_SPEC_FORMS: Final = (
    "a registry name (lsakit models), torchvision:NAME, timm:NAME, hf:DIR, "
    "package.module:factory or path/to/file.py:factory"
)


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``--model`` value (no import done yet).

    Attributes:
        text: the spec as given.
        kind: registry, torchvision, timm, hf, module or file.
        target: registry name, ecosystem model name, config path, module name or file path.
        factory: the factory's name (module and file specs), else None.
    """

    text: str
    kind: Kind
    target: str
    factory: str | None = None

    @property
    def runs_code(self) -> bool:
        """Whether building it imports and runs the user's code (a module or file factory)."""
        return self.kind in ("module", "file")


def _is_module_path(text: str) -> bool:
    parts = text.split(".")
    return all(p.isidentifier() and not keyword.iskeyword(p) for p in parts)


def parse_spec(spec: object) -> ModelSpec:
    """Parse a model spec (see the module docstring); ConfigError for a malformed one."""
    if not isinstance(spec, str):
        raise ConfigError(f"a model name must be a string, got {spec!r}; use {_SPEC_FORMS}")
    text = spec.strip()
    if not text:
        raise ConfigError(
            f"no model given; pass --model with {_SPEC_FORMS} (data sets of your own, folder:… "
            f"or tensor files, have no default model)"
        )
    if ":" not in text:
        return ModelSpec(text, "registry", text)
    prefix, _, rest = text.partition(":")
    if prefix in ECOSYSTEMS:
        if not rest.strip():
            raise ConfigError(f"model {text!r} names no model after {prefix}:; e.g. {prefix}:NAME")
        kind: Kind = prefix  # type: ignore[assignment]
        return ModelSpec(text, kind, rest.strip())
    left, _, factory = text.rpartition(":")
    if not factory.isidentifier():
        raise ConfigError(
            f"model {text!r}: {factory!r} after the last ':' is not a factory name; use "
            f"{_SPEC_FORMS}"
        )
    if left.endswith(".py"):
        return ModelSpec(text, "file", left, factory)
    if _is_module_path(left):
        return ModelSpec(text, "module", left, factory)
    raise ConfigError(
        f"unknown model {text!r}: {prefix!r} is not a model source (torchvision, timm, hf) and "
        f"{left!r} is neither a module path nor a .py file; use {_SPEC_FORMS}"
    )


# ------------------------------------------------------------------------------ optional packages


def import_optional(package: str, why: str, install: str) -> ModuleType:
    """Import ``package`` or raise one ConfigError line saying what to install."""
    try:
        return importlib.import_module(package)
    except ModuleNotFoundError as err:
        if err.name is not None and err.name.split(".")[0] == package:
            raise ConfigError(
                f"{why} needs the {package} package, which is not installed: {install}"
            ) from None
        raise ConfigError(
            f"{why} needs {package}, which is installed but cannot be imported: it needs "
            f"{err.name or err} ({one_line(err)}); install it: "
            f"{ECOSYSTEMS.get(err.name or '', (None, f'pip install {err.name}'))[1]}"
        ) from None
    except ImportError as err:
        raise ConfigError(
            f"{why} needs {package}, which cannot be imported ({one_line(err)}); "
            f"reinstall it: {install}"
        ) from None


def _ecosystem(spec: ModelSpec) -> ModuleType:
    package, install = ECOSYSTEMS[spec.kind]
    return import_optional(package, f"model {spec.text!r}", install)


# ----------------------------------------------------------------------------------- the sources


@dataclass(frozen=True)
class ModelSource:
    """A resolved model spec: how to build it and how to record its arguments.

    ``build(kwargs)`` constructs the model (random weights, training mode, CPU unless a device
    context is active); ``portable(kwargs)`` gives the arguments a checkpoint stores so the same
    model is rebuilt later, from the checkpoint alone where possible; ``check(kwargs)`` refuses
    arguments the builder does not take, without building (where that can be known up front).
    """

    spec: ModelSpec
    builder: Callable[[dict[str, Any]], nn.Module]
    portable: Callable[[dict[str, Any]], dict[str, Any]]
    check: Callable[[dict[str, Any]], object] = lambda kwargs: None

    def build(self, kwargs: Mapping[str, Any]) -> nn.Module:
        model = self.builder(dict(kwargs))
        if not isinstance(model, nn.Module):
            raise ConfigError(
                f"model {self.spec.text!r} built a {type(model).__name__}, not a "
                f"torch.nn.Module; return the network itself"
            )
        return model


def _as_is(kwargs: dict[str, Any]) -> dict[str, Any]:
    return kwargs


def _check_arguments(what: str, function: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    try:
        inspect.signature(function).bind(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{what} does not take these arguments ({one_line(err)})") from None
    except ValueError:  # no signature (a builtin): let the call decide
        pass


def _call(what: str, function: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``function(**kwargs)``; a bad argument or a failure inside becomes one ConfigError line."""
    _check_arguments(what, function, kwargs)
    try:
        return function(**kwargs)
    except Exception as err:
        raise ConfigError(
            f"{what}(**{kwargs}) failed: {type(err).__name__}: {one_line(err)}"
        ) from err


def _refuse(spec: ModelSpec, kwargs: Mapping[str, Any], prefixes: tuple[str, ...]) -> None:
    """Refuse arguments that would download weights or read a file behind lsakit's back."""
    bad = [key for key in kwargs if key.startswith(prefixes)]
    if bad:
        raise ConfigError(
            f"model {spec.text!r}: argument {bad[0]!r} is not allowed — lsakit builds models with "
            f"random weights and never downloads; load weights with --checkpoint"
        )


def _torchvision(spec: ModelSpec) -> ModelSource:
    tv = _ecosystem(spec)
    known: list[str] = sorted(tv.models.list_models())
    if spec.target not in known:
        _unknown_name(spec, known, "torchvision.models.list_models()")

    def build(kwargs: dict[str, Any]) -> nn.Module:
        _refuse(spec, kwargs, ("weights", "pretrained", "progress"))
        model: nn.Module = _call(
            f"torchvision model {spec.target!r}",
            lambda **kw: tv.models.get_model(spec.target, weights=None, **kw),
            kwargs,
        )
        return model

    return ModelSource(spec, build, _as_is)


def _timm(spec: ModelSpec) -> ModelSource:
    timm = _ecosystem(spec)
    if ":" in spec.target or spec.target.startswith(("hf-hub", "hf_hub", "local-dir")):
        raise ConfigError(
            f"model {spec.text!r}: hub and local-dir names load weights; use a plain timm "
            f"architecture name (timm.list_models()) and --checkpoint for weights"
        )
    if not timm.is_model(spec.target):
        _unknown_name(spec, list(timm.list_models()), "timm.list_models()")

    def build(kwargs: dict[str, Any]) -> nn.Module:
        _refuse(spec, kwargs, ("pretrained", "checkpoint_path", "cache_dir"))
        model: nn.Module = _call(
            f"timm model {spec.target!r}",
            lambda **kw: timm.create_model(spec.target, pretrained=False, **kw),
            kwargs,
        )
        return model

    return ModelSource(spec, build, _as_is)


def _unknown_name(spec: ModelSpec, known: list[str], listing: str) -> None:
    close = difflib.get_close_matches(spec.target, known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(f"unknown model {spec.text!r}; {hint}see {listing}")


# -- transformers ---------------------------------------------------------------------------------


class HFClassifier(nn.Module):
    """A transformers classification model whose forward takes one tensor and returns the logits.

    lsakit's stages call ``model(x)`` and read a logits tensor; transformers models return a
    ``ModelOutput``. An image or audio classifier gets ``x`` as its first input (``pixel_values``
    / ``input_values``); a sequence classifier gets float ``x`` (N, L, hidden) as
    ``inputs_embeds`` (attacks then work in embedding space; declare an unbounded domain) and
    integer ``x`` as ``input_ids``. The transformers model is ``self.model``.
    """

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        if task not in HF_TASKS:
            raise ConfigError(f"unknown transformers task {task!r}; use {', '.join(HF_TASKS)}")
        self.model = model
        self.task = task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.task == "sequence-classification":
            if x.is_floating_point():
                output = self.model(inputs_embeds=x)
            else:
                output = self.model(input_ids=x)
        else:
            output = self.model(x)
        return select_logits(output)  # a ModelOutput is a mapping holding "logits"


def _hf_config_dict(spec: ModelSpec) -> dict[str, Any]:
    path = Path(spec.target).expanduser()
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(
            f"model {spec.text!r}: no {file} — hf: takes a local directory holding config.json "
            f"(config.save_pretrained(DIR)) or a config.json file; nothing is downloaded"
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"model {spec.text!r}: cannot read {file} ({one_line(err)}); give a transformers "
            f"config.json"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ConfigError(
            f"model {spec.text!r}: {file} has no model_type; give a transformers config.json"
        )
    return data


def _hf_task(spec: ModelSpec, config: Mapping[str, Any], task: object) -> str:
    if task is not None:
        key = _HF_TASK_ALIASES.get(str(task), str(task))
        if key not in HF_TASKS:
            raise ConfigError(
                f"model {spec.text!r}: unknown task {task!r}; use task= one of "
                f"{', '.join(HF_TASKS)}"
            )
        return key
    for architecture in config.get("architectures") or []:
        for candidate in HF_TASKS:
            suffix = "For" + "".join(w.title() for w in candidate.split("-"))
            if str(architecture).endswith(suffix):
                return candidate
    raise ConfigError(
        f"model {spec.text!r}: the config's architectures {config.get('architectures')} name no "
        f"classifier; pass --model-arg task= one of {', '.join(HF_TASKS)}"
    )


def _hf(spec: ModelSpec, kwargs: Mapping[str, Any] | None = None) -> ModelSource:
    transformers = _ecosystem(spec)
    # A checkpoint's kwargs carry the whole config: then the file is not needed (nor read).
    file_config = _hf_config_dict(spec) if kwargs is None or "config" not in kwargs else None

    def config_and_task(kwargs: dict[str, Any]) -> tuple[Any, str]:
        kwargs = dict(kwargs)
        given = kwargs.pop("config", None)
        raw = dict(given if given is not None else file_config or _hf_config_dict(spec))
        if not isinstance(given, dict | None) or not isinstance(raw.get("model_type"), str):
            raise ConfigError(
                f"model {spec.text!r}: config must be a transformers config dict, got {given!r}"
            )
        if "auto_map" in raw:
            raise ConfigError(
                f"model {spec.text!r}: the config needs remote code (auto_map), which lsakit "
                f"never runs; use an architecture built into transformers"
            )
        task = _hf_task(spec, raw, kwargs.pop("task", None))
        model_type = raw.pop("model_type")
        raw.pop("transformers_version", None)
        try:
            config = transformers.AutoConfig.for_model(model_type, **raw)
        except (ValueError, TypeError, KeyError) as err:
            raise ConfigError(
                f"model {spec.text!r}: transformers cannot read this config ({one_line(err)})"
            ) from None
        for key, value in kwargs.items():
            if not hasattr(config, key):
                close = difflib.get_close_matches(key, list(config.to_dict()), n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ConfigError(
                    f"model {spec.text!r}: the {type(config).__name__} has no attribute {key!r}; "
                    f"{hint}model arguments of hf: models are task= and config attributes"
                )
            setattr(config, key, value)
        return config, task

    def build(kwargs: dict[str, Any]) -> nn.Module:
        config, task = config_and_task(kwargs)
        auto = getattr(transformers, HF_TASKS[task])
        model: nn.Module = _call(
            f"{HF_TASKS[task]} for {type(config).__name__}",
            lambda: auto.from_config(config, trust_remote_code=False),
            {},
        )
        return HFClassifier(model, task)

    def portable(kwargs: dict[str, Any]) -> dict[str, Any]:
        config, task = config_and_task(kwargs)
        return {"task": task, "config": json.loads(config.to_json_string(use_diff=False))}

    return ModelSource(spec, build, portable, config_and_task)


# -- user code ------------------------------------------------------------------------------------

#: Python files already imported by path: path → (modification time, module).
_FILE_MODULES: dict[Path, tuple[int, ModuleType]] = {}


def _import_file(spec: ModelSpec) -> ModuleType:
    path = Path(spec.target).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"model {spec.text!r}: no Python file {spec.target}; check the path")
    mtime = path.stat().st_mtime_ns
    cached = _FILE_MODULES.get(path)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    name = f"lsakit_user_model_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ConfigError(f"model {spec.text!r}: cannot import {path} as Python")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        loader_spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise ConfigError(
            f"model {spec.text!r}: importing {path} failed: {type(err).__name__}: {one_line(err)}"
        ) from err
    _FILE_MODULES[path] = (mtime, module)
    return module


def _import_module(spec: ModelSpec) -> ModuleType:
    try:
        return importlib.import_module(spec.target)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if spec.target == missing or spec.target.startswith(missing + "."):
            raise ConfigError(
                f"unknown model {spec.text!r}: {spec.target.split('.')[0]!r} is not a model "
                f"source (torchvision, timm, hf) and no module {missing!r} can be imported; use "
                f"{_SPEC_FORMS}"
            ) from None
        raise ConfigError(
            f"model {spec.text!r}: importing {spec.target} failed: {one_line(err)}"
        ) from None
    except Exception as err:
        raise ConfigError(
            f"model {spec.text!r}: importing {spec.target} failed: {type(err).__name__}: "
            f"{one_line(err)}"
        ) from err


def _factory(spec: ModelSpec) -> ModelSource:
    module = _import_file(spec) if spec.kind == "file" else _import_module(spec)
    assert spec.factory is not None
    factory = getattr(module, spec.factory, None)
    if factory is None or not callable(factory):
        public = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        close = difflib.get_close_matches(spec.factory, public, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        what = "no" if factory is None else "a non-callable"
        raise ConfigError(
            f"model {spec.text!r}: {spec.target} has {what} factory {spec.factory!r}; {hint}"
            f"name a function that returns the nn.Module"
        )

    def build(kwargs: dict[str, Any]) -> nn.Module:
        model: nn.Module = _call(f"factory {spec.text}", factory, kwargs)
        return model

    def check(kwargs: dict[str, Any]) -> None:
        _check_arguments(f"factory {spec.text}", factory, kwargs)

    return ModelSource(spec, build, _as_is, check)


def resolve_external(spec: ModelSpec, kwargs: Mapping[str, Any] | None = None) -> ModelSource:
    """Resolve a non-registry spec: import its package or code, check its name or factory.

    ``kwargs``, when known, are the arguments it will be built with: an ``hf:`` model given its
    whole ``config`` (as a checkpoint stores it) does not need its config file.
    """
    if spec.kind == "hf":
        return _hf(spec, kwargs)
    if spec.kind == "torchvision":
        return _torchvision(spec)
    if spec.kind == "timm":
        return _timm(spec)
    return _factory(spec)
