"""Models from outside the registry: torchvision, timm, transformers, RobustBench, your own code.

A model *spec* is one string, the value of ``--model``:

=================================  ==========================================================
spec                               what is built
=================================  ==========================================================
``model_b``                        a registry model (:mod:`lsakit.models`)
``torchvision:NAME``               ``torchvision.models.get_model(NAME, **kw)``; pretrained
                                   with ``weights=DEFAULT|ENUM_NAME``
``timm:NAME[.TAG]``                ``timm.create_model(NAME, **kw)``; pretrained with
                                   ``pretrained=true``; ``timm:hf-hub:ORG/REPO[@REV]``
``hf:ORG/NAME``                    a transformers classifier from the hub
                                   (``from_pretrained``, ``revision=``), safetensors only
``hf:DIR`` or ``hf:FILE.json``     a transformers classifier from a local ``config.json``
                                   (``AutoModelFor…Classification.from_config``, random
                                   weights); both wrapped so that forward returns the logits
                                   (:class:`~lsakit.models.ecosystems.HFClassifier`)
``robustbench:NAME``               a RobustBench zoo model (``dataset=``, ``threat_model=``,
                                   ``model_dir=``; :mod:`lsakit.models.robustbench`)
``package.module:factory``         ``factory(**kw)`` from an importable module
``path/to/file.py:factory``        ``factory(**kw)`` from a Python file
=================================  ==========================================================

``kw`` are the model arguments (``--model-arg KEY=VALUE``). Pretrained weights load through
each ecosystem's own code, with the preprocessing and provenance of
:mod:`lsakit.models.ecosystems` and :mod:`lsakit.models.pretrained`; remote code never runs.
Weights of your own come from ``--checkpoint`` (a plain state dict, or an lsakit checkpoint).

For ``hf:`` the model arguments are ``task`` (``image-classification``,
``sequence-classification`` or ``audio-classification``; default: read from the config's
``architectures``), ``revision`` (hub repos) and any config attribute to override (e.g.
``num_labels=10``). A sequence classifier takes float inputs as ``inputs_embeds`` (N, L,
hidden), integer inputs as ``input_ids``. An lsakit checkpoint of an ``hf:`` model stores the
whole config, so it loads without the directory or the hub.

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
import keyword
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Literal, TypeAlias

from torch import nn

from lsakit._io import one_line
from lsakit._optional import ECOSYSTEMS, import_optional
from lsakit.errors import ConfigError
from lsakit.models.pretrained import Loaded

Kind: TypeAlias = Literal["registry", "torchvision", "timm", "hf", "robustbench", "module", "file"]

_SPEC_FORMS: Final = (
    "a registry name (lsakit models), torchvision:NAME, timm:NAME, hf:ORG/NAME or hf:DIR, "
    "robustbench:NAME, package.module:factory or path/to/file.py:factory"
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
    """Parse a model spec (see the module docstring); ConfigError for a malformed one.

    Args:
        spec: the ``--model`` value (anything but a non-empty string raises ConfigError).

    Returns:
        The parsed spec, stripped of surrounding spaces; nothing is imported or checked to exist.
    """
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


def ecosystem(spec: ModelSpec) -> ModuleType:
    package, install = ECOSYSTEMS[spec.kind]
    return import_optional(package, f"model {spec.text!r}", install)


# ----------------------------------------------------------------------------------- the sources


def _check_nothing(kwargs: dict[str, Any]) -> None:
    """The default ``check`` of a :class:`ModelSource`: nothing is known up front, every
    argument is left to the builder.

    Args:
        kwargs: the model arguments (not looked at).
    """


def _never_pretrained(kwargs: Mapping[str, Any]) -> bool:
    """The default ``pretrained`` of a :class:`ModelSource`: no argument loads pretrained weights.

    Args:
        kwargs: the model arguments (not looked at).

    Returns:
        False.
    """
    return False


@dataclass(frozen=True)
class ModelSource:
    """A resolved model spec: how to load it and how to record its arguments.

    ``loader(kwargs)`` constructs the model (training mode, CPU unless a device context is
    active): random weights, or the pretrained weights the arguments ask for, as a
    :class:`~lsakit.models.pretrained.Loaded` with their preprocessing, class names and
    provenance; ``portable(kwargs)`` gives the arguments a checkpoint stores so the same
    architecture is rebuilt later, from the checkpoint alone where possible and without
    downloading weights; ``check(kwargs)`` refuses arguments the builder does not take, without
    building (where that can be known up front); ``pretrained(kwargs)`` says whether the arguments
    load pretrained weights.
    """

    spec: ModelSpec
    loader: Callable[[dict[str, Any]], Loaded]
    portable: Callable[[dict[str, Any]], dict[str, Any]]
    check: Callable[[dict[str, Any]], object] = _check_nothing
    pretrained: Callable[[Mapping[str, Any]], bool] = _never_pretrained

    def load(self, kwargs: Mapping[str, Any]) -> Loaded:
        """Load the model with these arguments; ConfigError if the loader built no nn.Module.

        Args:
            kwargs: the model arguments (copied before the loader sees them).

        Returns:
            The model with its preprocessing, labels and provenance.
        """
        loaded = self.loader(dict(kwargs))
        if not isinstance(loaded.model, nn.Module):
            raise ConfigError(
                f"model {self.spec.text!r} built a {type(loaded.model).__name__}, not a "
                f"torch.nn.Module; return the network itself"
            )
        return loaded

    def build(self, kwargs: Mapping[str, Any]) -> nn.Module:
        """The model of :meth:`load` alone.

        Args:
            kwargs: the model arguments.

        Returns:
            ``self.load(kwargs).model``.
        """
        return self.load(kwargs).model


def plain(builder: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Loaded]:
    """A loader from a builder of random-weight models (no preprocessing, no provenance)."""
    return lambda kwargs: Loaded(builder(kwargs))


def _as_is(kwargs: dict[str, Any]) -> dict[str, Any]:
    return kwargs


def check_arguments(what: str, function: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    try:
        inspect.signature(function).bind(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{what} does not take these arguments ({one_line(err)})") from None
    except ValueError:  # no signature (a builtin): let the call decide
        pass


def call(what: str, function: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """``function(**kwargs)``; a bad argument or a failure inside becomes one ConfigError line."""
    check_arguments(what, function, kwargs)
    try:
        return function(**kwargs)
    except Exception as err:
        raise ConfigError(
            f"{what}(**{kwargs}) failed: {type(err).__name__}: {one_line(err)}"
        ) from err


def refuse(
    spec: ModelSpec, kwargs: Mapping[str, Any], prefixes: tuple[str, ...], instead: str
) -> None:
    """Refuse arguments that would load weights behind lsakit's back (its provenance, its
    preprocessing): ``instead`` says how to ask for weights."""
    bad = [key for key in kwargs if key.startswith(prefixes)]
    if bad:
        raise ConfigError(
            f"model {spec.text!r}: argument {bad[0]!r} is not accepted; {instead}, or load "
            f"weights of your own with --checkpoint"
        )


def unknown_name(spec: ModelSpec, known: list[str], listing: str) -> None:
    close = difflib.get_close_matches(spec.target, known, n=1 if len(known) > 1000 else 3,
                                      cutoff=0.6)  # fmt: skip
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ConfigError(f"unknown model {spec.text!r}; {hint}see {listing}")


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


def factory_source(spec: ModelSpec) -> ModelSource:
    """The source of a ``package.module:factory`` or ``file.py:factory`` spec (imported here)."""
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
        model: nn.Module = call(f"factory {spec.text}", factory, kwargs)
        return model

    def check(kwargs: dict[str, Any]) -> None:
        check_arguments(f"factory {spec.text}", factory, kwargs)

    return ModelSource(spec, plain(build), _as_is, check)
