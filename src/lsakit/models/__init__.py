"""Registry of the networks used in the LSA paper and its companions.

``build(name, **kwargs)`` constructs a model by name; ``names()`` lists them and ``info(name)``
describes one. Every model takes inputs in [0, 1] (any normalization is a :class:`Normalize`
module inside it), and every activation is its own ``inplace=False`` module instance, so forward
hooks (the LSA probe) see each activation layer once per forward pass.

Models (Khalooei et al. 2022, arXiv:2202.02626, Table 1):

========================  ============  ===========================================  ===========
name                      data          architecture                                 activations
========================  ============  ===========================================  ===========
``model_a``               two moons     MLP, 3 × (Linear(100) → ELU) → Linear(2|1)   3
``model_b``               MNIST         3 conv + 2 linear (paper model B)            4
``vgg19``                 CIFAR-10      VGG-19 with BatchNorm (paper model C)        16
``wrn``                   CIFAR-10      WideResNet-28-10 by default (paper model D)  depth − 3
``preact_resnet18``       CIFAR-10      PreAct ResNet-18 (Wong et al. 2020)          17
========================  ============  ===========================================  ===========

The default keyword arguments of each model live in one place, its builder's signature;
:func:`info` reads them from there.

Beyond the registry, :func:`build` and :func:`resolve` take every model *spec* of
:mod:`lsakit.models.sources` — ``torchvision:NAME``, ``timm:NAME``, ``hf:DIR``,
``package.module:factory`` and ``path/to/file.py:factory`` — so the trainer, the CLI and the
checkpoints name any model the same way: ``build("timm:resnet18", num_classes=2)``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from lsakit.errors import ConfigError
from lsakit.models import ecosystems
from lsakit.models.cnn import model_b
from lsakit.models.ecosystems import HFClassifier
from lsakit.models.mlp import model_a
from lsakit.models.normalize import CIFAR10_MEAN, CIFAR10_STD, MNIST_MEAN, MNIST_STD, Normalize
from lsakit.models.preact_resnet import PreActResNet, preact_resnet18
from lsakit.models.pretrained import (
    Loaded,
    Preprocessing,
    Provenance,
    add_input_normalization,
)
from lsakit.models.sources import ModelSource, ModelSpec, factory_source, parse_spec, plain
from lsakit.models.vgg import VGG, vgg19
from lsakit.models.wrn import WideResNet, wrn
from lsakit.nas.genotype import genotype_network, portable_genotype_kwargs
from lsakit.registry import Registry

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "VGG",
    "HFClassifier",
    "Loaded",
    "ModelInfo",
    "ModelSource",
    "ModelSpec",
    "Normalize",
    "PreActResNet",
    "Preprocessing",
    "Provenance",
    "WideResNet",
    "add_input_normalization",
    "build",
    "count_parameters",
    "info",
    "load",
    "names",
    "parse_spec",
    "portable_kwargs",
    "resolve",
    "resolve_kwargs",
]


@dataclass(frozen=True)
class ModelInfo:
    """What a registered model is and how it is built by default.

    Attributes:
        name: registry name, as passed to :func:`build`.
        description: one line: the architecture and where it comes from.
        input_shape: shape of one input sample with the default arguments, e.g. ``(3, 32, 32)``.
        num_classes: number of logits with the default arguments.
        default_kwargs: every keyword argument :func:`build` accepts, with its default value
            (a fresh copy per :func:`info` call, so mutating it changes nothing).
    """

    name: str
    description: str
    input_shape: tuple[int, ...]
    num_classes: int
    default_kwargs: dict[str, Any]


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., nn.Module]
    description: str
    input_shape: tuple[int, ...]
    #: complete kwargs → self-contained ones (no references to files) for checkpoints
    portable: Callable[[dict[str, Any]], dict[str, Any]] | None = None


_CIFAR_SHAPE = (3, 32, 32)

# Insertion order is the order of names(): the paper's models A-D first, then companions.
_REGISTRY: Registry[_Entry] = Registry(
    "model",
    {
        "model_a": _Entry(
            model_a,
            "MLP for two moons (paper model A): 3 × (Linear(100) → ELU) → Linear(2) "
            "(outputs=1: the paper's Linear(1), returned as the logits [0, z])",
            (2,),
        ),
        "model_b": _Entry(
            model_b,
            "CNN for MNIST (paper model B): 3 conv 5×5 + ReLU, 2 max-pools, Linear(100) → Linear(10)",
            (1, 28, 28),
        ),
        "vgg19": _Entry(
            vgg19,
            "VGG-19 with BatchNorm for CIFAR-10 (paper model C), CIFAR-10 normalization inside",
            _CIFAR_SHAPE,
        ),
        "wrn": _Entry(
            wrn,
            "WideResNet (Zagoruyko & Komodakis 2016; paper model D), WRN-28-10 by default, "
            "CIFAR-10 normalization inside",
            _CIFAR_SHAPE,
        ),
        "preact_resnet18": _Entry(
            preact_resnet18,
            "PreAct ResNet-18 (He et al. 2016) as in Wong et al. 2020 / Rice et al. 2020, "
            "CIFAR-10 normalization inside",
            _CIFAR_SHAPE,
        ),
        "genotype_net": _Entry(
            genotype_network,
            "DARTS-style network built from a cell genotype (RACL, Dong et al. 2020; default: the "
            "published RACL cell; genotype= a name, JSON or a genotype file from `lsakit search`)",
            (1, 28, 28),
            portable_genotype_kwargs,
        ),
    },
    alternatives="torchvision:NAME, timm:NAME, hf:DIR, module.path:factory, path/file.py:factory",
    cutoff=0.5,
)


def names() -> list[str]:
    """Registered model names, the paper's models A-D first.

    Returns:
        The registry names, in registration order (specs such as ``timm:NAME`` are not listed).
    """
    return _REGISTRY.names()


def _entry(name: object) -> _Entry:
    return _REGISTRY.get(name)


def _default_kwargs(builder: Callable[..., nn.Module]) -> dict[str, Any]:
    """The builder's keyword-only arguments and their defaults: the single source of defaults."""
    return {
        p.name: p.default
        for p in inspect.signature(builder).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
    }


def info(name: str) -> ModelInfo:
    """Describe the registered model ``name``; ConfigError (with the closest name) if unknown.

    Args:
        name: a registry name (see :func:`names`); specs with ``:`` are not registered models.

    Returns:
        Its description, input shape, default number of classes and every keyword argument
        :func:`build` accepts with its default (a fresh dict on each call).
    """
    entry = _entry(name)
    defaults = _default_kwargs(entry.builder)
    return ModelInfo(
        name=name,
        description=entry.description,
        input_shape=entry.input_shape,
        num_classes=int(defaults["num_classes"]),
        default_kwargs=defaults,
    )


def resolve_kwargs(name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The complete keyword arguments ``build(name, **kwargs)`` uses: defaults overridden by kwargs.

    Raises ConfigError for an unknown model or an argument the model does not accept, naming
    the closest accepted one. Values are checked by the model itself when it is built. For a
    model outside the registry (a spec with ``:``) the arguments are returned as given: its
    builder checks them.

    Args:
        name: a registry name or any model spec of :mod:`lsakit.models.sources`.
        kwargs: the keyword arguments given for the build (not modified).

    Returns:
        A new dict: the registry model's defaults overridden by ``kwargs``, or a copy of
        ``kwargs`` for a model outside the registry.
    """
    if parse_spec(name).kind != "registry":
        return dict(kwargs)
    defaults = _default_kwargs(_entry(name).builder)
    for key in kwargs:
        if key not in defaults:
            close = difflib.get_close_matches(str(key), list(defaults), n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"model {name!r} has no argument {key!r}; {hint}accepted: {', '.join(defaults)}"
            )
    return {**defaults, **kwargs}


def portable_kwargs(name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`resolve_kwargs`, made self-contained for a checkpoint: an argument that points to a
    file (the genotype of ``genotype_net``, the config of an ``hf:`` model) is replaced by the
    file's content.

    Args:
        name: a registry name or any model spec (resolved, so a module or file spec is imported).
        kwargs: the keyword arguments the model is built with.

    Returns:
        The arguments a checkpoint stores to rebuild the same architecture (for a registry
        model: complete, defaults filled in).
    """
    return resolve(name, kwargs).portable(dict(kwargs))


def _registry_source(spec: ModelSpec) -> ModelSource:
    entry = _entry(spec.target)

    def build_registered(kwargs: dict[str, Any]) -> nn.Module:
        return entry.builder(**resolve_kwargs(spec.target, kwargs))

    def portable(kwargs: dict[str, Any]) -> dict[str, Any]:
        full = resolve_kwargs(spec.target, kwargs)
        return entry.portable(full) if entry.portable is not None else full

    def check(kwargs: dict[str, Any]) -> None:
        resolve_kwargs(spec.target, kwargs)

    return ModelSource(spec, plain(build_registered), portable, check)


def resolve_external(spec: ModelSpec, kwargs: Mapping[str, Any] | None = None) -> ModelSource:
    """Resolve a non-registry spec: import its package or code, check its name or factory.

    ``kwargs``, when known, are the arguments it will be built with: an ``hf:`` model given its
    whole ``config`` (as a checkpoint stores it) does not need its config file.
    """
    if spec.kind == "hf":
        return ecosystems.hf_source(spec, kwargs)
    if spec.kind == "torchvision":
        return ecosystems.torchvision_source(spec)
    if spec.kind == "timm":
        return ecosystems.timm_source(spec)
    if spec.kind == "robustbench":
        from lsakit.models import robustbench  # imported when a robustbench: model is named

        return robustbench.robustbench_source(spec)
    return factory_source(spec)


def resolve(spec: str, kwargs: Mapping[str, Any] | None = None) -> ModelSource:
    """Check a model spec without building it: the registry name is known, the ecosystem's
    package imports and knows the name, the ``hf:`` config reads, the factory exists.
    ``kwargs``, when known, are the arguments the model will be built with: they are checked
    where that is possible without building (registry models, factories, ``hf:`` config
    attributes), and a checkpoint's ``hf:`` arguments hold the whole config, so the config file
    is then not needed.

    Every failure is one ConfigError line (an unknown name with the closest one, a missing
    package with what to install). A module or file spec is imported here: that runs its code.

    Args:
        spec: a registry name or any spec of :mod:`lsakit.models.sources`.
        kwargs: the arguments the model will be built with, checked where possible; None:
            not known yet, nothing checked.

    Returns:
        The :class:`ModelSource` that loads the model and records its arguments.
    """
    parsed = parse_spec(spec)
    if parsed.kind == "registry":
        source = _registry_source(parsed)
    else:
        source = resolve_external(parsed, kwargs)
    if kwargs is not None:
        source.check(dict(kwargs))
    return source


def load(spec: str, **kwargs: Any) -> Loaded:
    """Load the model ``spec`` — a registry name or any spec of :mod:`lsakit.models.sources` —
    with the weights its arguments ask for, in training mode, on the CPU (or the active device
    context): random weights, or pretrained ones in the ecosystem's own words
    (``weights="DEFAULT"`` for torchvision, ``pretrained=True`` or an ``hf-hub:`` name for timm,
    a hub repo for ``hf:``, every ``robustbench:`` model).

    The result holds the model (taking [0, 1] pixels: the weights' normalization is inside it),
    the data transform for a data set's images, the class names of the weights and where the
    weights came from (:class:`~lsakit.models.pretrained.Loaded`).

    Args:
        spec: a registry name or any spec of :mod:`lsakit.models.sources`.
        kwargs: the model arguments (a registry model's keyword arguments, the ecosystem's own
            for the others, e.g. ``weights``, ``pretrained``, ``num_classes``).

    Returns:
        The :class:`~lsakit.models.pretrained.Loaded` model with its preprocessing, labels and
        provenance (None where there are none).

    Example:
        >>> loaded = load("torchvision:resnet18", weights="DEFAULT")  # doctest: +SKIP
        >>> loaded.preprocessing.describe(), loaded.labels[:2]  # doctest: +SKIP
        ('resize shorter side 256 (bilinear), center crop 224×224, …', ('tench', 'goldfish'))
    """
    return resolve(spec, kwargs).load(kwargs)


def build(name: str, **kwargs: Any) -> nn.Module:
    """The model of :func:`load` alone: ``load(name, **kwargs).model``.

    Args:
        name: a registry name or any spec of :mod:`lsakit.models.sources`.
        kwargs: the model arguments, as for :func:`load`.

    Returns:
        The model, taking inputs in [0, 1], in training mode, on the CPU (or the active device
        context).

    Example:
        >>> model = build("wrn", depth=16, widen_factor=2)
    """
    return load(name, **kwargs).model


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters; a parameter shared by several layers counts once.

    Args:
        model: the module whose parameters are counted (buffers are not).
        trainable_only: count only the parameters with ``requires_grad``.

    Returns:
        The number of scalar parameter entries.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
