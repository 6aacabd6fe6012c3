"""What counts as an activation: the one documented list the default layer selection reads.

- :data:`ACTIVATION_TYPES`: torch.nn's non-linear activation modules;
- the activation modules of timm and transformers, found in their modules when loaded
  (:data:`THIRD_PARTY_ACTIVATION_MODULES`);
- classes registered with :func:`register_activation`;
- :data:`FUNCTIONAL_ACTIVATIONS`: activation functions (``F.relu``, ``torch.tanh``,
  ``Tensor.relu``, …), whose calls outside activation modules the probe captures, and functions
  registered with :func:`register_functional_activation`.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lsakit.errors import ConfigError, LsakitWarning

#: Module types captured by default: the non-linear activation modules of ``torch.nn``.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.LogSigmoid,
    nn.Tanhshrink,
)

#: Where timm and transformers define their activation modules. Every nn.Module class *defined* in
#: one of these modules is an activation (read from their sources: timm.layers.activations{,_me},
#: transformers.activations), except the identities below. The packages are never imported here:
#: a model built from them has loaded them already.
THIRD_PARTY_ACTIVATION_MODULES: tuple[str, ...] = (
    "timm.layers.activations",
    "timm.layers.activations_me",
    "transformers.activations",
)
#: Classes in those modules that are not non-linearities.
_NOT_ACTIVATIONS = frozenset({"LinearActivation", "Identity"})

_registered: list[type[nn.Module]] = []
_discovered: dict[str, tuple[type[nn.Module], ...]] = {}


def register_activation(cls: type[nn.Module]) -> type[nn.Module]:
    """Make the default selection capture modules of class ``cls`` (usable as a decorator).

    Args:
        cls: an ``nn.Module`` subclass; registering it twice changes nothing.

    Returns:
        ``cls`` itself, so the function works as a class decorator.
    """
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise ConfigError(f"register_activation takes an nn.Module subclass, got {cls!r}")
    if cls not in _registered:
        _registered.append(cls)
    return cls


def _third_party_activations() -> tuple[type[nn.Module], ...]:
    found: list[type[nn.Module]] = []
    for name in THIRD_PARTY_ACTIVATION_MODULES:
        module = sys.modules.get(name)
        if module is None:
            continue
        if name not in _discovered:
            _discovered[name] = tuple(
                value
                for key, value in vars(module).items()
                if isinstance(value, type)
                and issubclass(value, nn.Module)
                and value.__module__ == name
                and key not in _NOT_ACTIVATIONS
            )
        found.extend(_discovered[name])
    return tuple(found)


def activation_types() -> tuple[type[nn.Module], ...]:
    """Every class the default selection captures now: torch.nn's, the loaded third-party
    packages' and the registered ones."""
    return (*ACTIVATION_TYPES, *_third_party_activations(), *_registered)


#: Activation functions whose calls outside activation modules the default selection captures,
#: function → the name in the representation's name (``module:relu#0``). In-place variants and
#: the Tensor methods share their function's name.
FUNCTIONAL_ACTIVATIONS: dict[Any, str] = {
    fn: name
    for name, fns in {
        "relu": (F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_),
        "relu6": (F.relu6,),
        "elu": (F.elu, F.elu_),
        "selu": (F.selu,),
        "celu": (F.celu,),
        "leaky_relu": (F.leaky_relu, F.leaky_relu_),
        "prelu": (F.prelu,),
        "rrelu": (F.rrelu,),
        "gelu": (F.gelu,),
        "silu": (F.silu,),
        "mish": (F.mish,),
        "hardswish": (F.hardswish,),
        "hardsigmoid": (F.hardsigmoid,),
        "hardtanh": (F.hardtanh, F.hardtanh_),
        "softplus": (F.softplus,),
        "softsign": (F.softsign,),
        "logsigmoid": (F.logsigmoid,),
        "tanh": (torch.tanh, torch.tanh_, torch.Tensor.tanh, torch.Tensor.tanh_, F.tanh),
        "sigmoid": (
            torch.sigmoid,
            torch.sigmoid_,
            torch.Tensor.sigmoid,
            torch.Tensor.sigmoid_,
            F.sigmoid,
        ),
    }.items()
    for fn in fns
}

_FUNCTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def register_functional_activation(fn: Any, name: str) -> Any:
    """Make the default selection capture calls of the function ``fn`` (a torch function, e.g.
    ``torch.erf``, or a ``Tensor`` method) outside activation modules, named ``module:NAME#k``.

    Only functions that reach ``__torch_function__`` can be seen: torch's own functions and
    methods, and Python functions decorated with :func:`torch.overrides.handle_torch_function`.

    Args:
        fn: the function or ``Tensor`` method to capture; registering it again replaces its name.
        name: the name in the representation's name, letters, digits and ``_`` (e.g. ``"erf"``).

    Returns:
        ``fn`` itself.
    """
    if not callable(fn):
        raise ConfigError(f"register_functional_activation takes a function, got {fn!r}")
    if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
        raise ConfigError(
            f"register_functional_activation needs a name of letters, digits and _, got {name!r}"
        )
    FUNCTIONAL_ACTIVATIONS[fn] = name
    return fn


def functional_names() -> frozenset[str]:
    """The names of the activation functions captured now (``relu``, ``gelu``, …)."""
    return frozenset(FUNCTIONAL_ACTIVATIONS.values())


ACTIVATION_LIKE = re.compile(
    r"relu|gelu|silu|swish|mish|tanh|sigmoid|elu|softplus|activation|act$", re.I
)


class InvisibleActivationWarning(LsakitWarning):
    """Activations may run where the probe cannot see them: inside scripted or compiled
    modules."""
