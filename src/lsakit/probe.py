"""LayerProbe: capture layer representations φ_l(x) with forward hooks.

LSA (Khalooei et al. 2022, §3) compares the output φ_l of each monitored layer l on clean and
perturbed inputs. The probe registers one forward hook per selected module, records outputs in
forward *execution* order and removes every hook when the ``with`` block exits, error or not.

Layer selection (``layers=``):

* ``None`` (default): every activation module (:data:`ACTIVATION_TYPES`: ReLU, ELU, LeakyReLU, GELU,
  SiLU, Tanh, Sigmoid, …), as the paper's reference code does. Functional activations (``F.relu``)
  are invisible to hooks; models meant for LSA use activation modules.
* a module type or a tuple of types, e.g. ``nn.Conv2d``;
* a string: a glob over module names from ``named_modules()``, e.g. ``"features.*"``;
* a sequence of strings, each an exact module name, a glob, or a label ``"L<k>"``. ``L<k>`` is the
  k-th representation of the *default* selection, i.e. the labels an LSA run prints.

Every call of a selected module in one forward pass is one representation, so a module used twice
yields two (named ``name`` and ``name#1``). Representations are labelled ``L0, L1, …`` in the order
the probe captured them.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeAlias

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from lsakit.errors import ConfigError, InputError

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

LayerSpec: TypeAlias = type[nn.Module] | tuple[type[nn.Module], ...] | str | Sequence[str] | None

_LABEL = re.compile(r"^L(\d+)$")


@dataclass(frozen=True)
class Layer:
    """One captured representation: its position, module name and call number in a forward."""

    index: int
    module_name: str
    call: int = 0

    @property
    def label(self) -> str:
        """The paper's layer name: ``L<index>``."""
        return f"L{self.index}"

    @property
    def name(self) -> str:
        """Module name, with ``#k`` appended for the k-th reuse of one module in a forward."""
        return self.module_name if self.call == 0 else f"{self.module_name}#{self.call}"

    def __str__(self) -> str:
        return f"{self.label} ({self.name})"


@dataclass(frozen=True)
class _Selection:
    """Modules to hook, and which default-order activation calls to keep (for ``L<k>`` names)."""

    always: frozenset[str]  # module names captured on every call
    activation_labels: frozenset[int]  # indices k of ``L<k>`` in the default order


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _resolve(model: nn.Module, layers: LayerSpec) -> _Selection:
    named = dict(model.named_modules())
    del named[""]  # the root is never a layer
    if layers is None:
        chosen = frozenset(n for n, m in named.items() if isinstance(m, ACTIVATION_TYPES))
        if not chosen:
            raise ConfigError(
                f"{type(model).__name__} has no activation modules to probe (functional "
                f"activations such as F.relu are invisible to hooks); use nn.ReLU modules or "
                f"pass layers="
            )
        return _Selection(chosen, frozenset())
    if isinstance(layers, type) or (
        isinstance(layers, tuple) and layers and all(isinstance(t, type) for t in layers)
    ):
        types: tuple[type[nn.Module], ...] = layers if isinstance(layers, tuple) else (layers,)
        chosen = frozenset(n for n, m in named.items() if isinstance(m, types))
        if not chosen:
            names = ", ".join(t.__name__ for t in types)
            raise ConfigError(f"the model has no module of type {names}; pick another layers= type")
        return _Selection(chosen, frozenset())
    if not isinstance(layers, (str, list, tuple, set, frozenset)):
        raise ConfigError(
            f"layers= must be None, a module type, a name, glob or L<k> label, or a list of them; "
            f"got {type(layers).__name__} {layers!r}"
        )
    specs = [layers] if isinstance(layers, str) else list(layers)
    if not specs:
        raise ConfigError("layers= is empty; pass None for the default activation layers")
    always: set[str] = set()
    labels: set[int] = set()
    for spec in specs:
        if not isinstance(spec, str):
            raise ConfigError(f"layers= entries must be module names, globs or L<k>, got {spec!r}")
        label = _LABEL.match(spec)
        if label is not None and spec not in named:
            labels.add(int(label.group(1)))
        elif _is_glob(spec):
            matches = fnmatch.filter(named, spec)
            if not matches:
                raise ConfigError(
                    f"layer pattern {spec!r} matches no module; see model.named_modules()"
                )
            always.update(matches)
        elif spec in named:
            always.add(spec)
        else:
            close = difflib.get_close_matches(spec, list(named), n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "see model.named_modules()"
            raise ConfigError(f"unknown layer {spec!r}: {hint}")
    return _Selection(frozenset(always), frozenset(labels))


class LayerProbe:
    """Context manager capturing layer outputs φ_l(x) during forward passes.

    Args:
        model: any ``nn.Module``. The probe never runs it; call the model yourself inside the block.
        layers: which layers to capture (see the module docstring); default: activation modules.
        detach: ``True`` (analysis) stores detached copies, safe against later in-place ops;
            ``False`` (training) keeps the graph so a loss on the representations back-propagates.

    Example::

        with LayerProbe(model) as probe:
            model(x)
            clean = probe.take()          # list of tensors, one per layer, forward order
            model(x_adv)
            perturbed = probe.take()
        probe.layers                      # [Layer(L0, 'net.1'), ...]

    Each forward pass of the root model starts a new record; :meth:`take` returns the record of the
    latest forward and clears it. ``layers`` is fixed by the first forward and later forwards must
    produce the same layers (same names, same order), which static networks do.
    """

    def __init__(self, model: nn.Module, layers: LayerSpec = None, *, detach: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"LayerProbe needs an nn.Module, got {type(model).__name__}")
        self.model = model
        self.detach = detach
        self._selection = _resolve(model, layers)
        self._handles: list[RemovableHandle] = []
        self._record: list[tuple[str, int, torch.Tensor]] = []
        self._calls: dict[str, int] = {}
        self._activation_count = 0
        self._layers: list[Layer] | None = None
        self._paused = False

    # -- hooks ---------------------------------------------------------------------------------
    def __enter__(self) -> LayerProbe:
        if self._handles:
            raise RuntimeError("LayerProbe is already active; it cannot be entered twice")
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._start_forward))
            for name, module in self.model.named_modules():
                if not name:
                    continue
                activation = isinstance(module, ACTIVATION_TYPES)
                if name in self._selection.always or (
                    activation and self._selection.activation_labels
                ):
                    self._handles.append(module.register_forward_hook(self._hook(name, activation)))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _start_forward(self, module: nn.Module, args: Any) -> None:
        if not self._paused:
            self._record = []
            self._calls = {}
            self._activation_count = 0

    def _hook(self, name: str, activation: bool) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self._paused:
                return
            call = self._calls.get(name, 0)
            self._calls[name] = call + 1
            keep = name in self._selection.always
            if activation:
                keep = keep or self._activation_count in self._selection.activation_labels
                self._activation_count += 1
            if not keep:
                return
            out = output[0] if isinstance(output, (tuple, list)) else output
            if not isinstance(out, torch.Tensor):
                raise InputError(f"layer {name!r} returned {type(out).__name__}, not a tensor")
            # A detached view shares storage with the live activation; clone it so a later in-place
            # op in the model (e.g. ``out += residual``) cannot change what was captured.
            self._record.append((name, call, out.detach().clone() if self.detach else out))

        return hook

    # -- results -------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Whether hooks are currently registered."""
        return bool(self._handles)

    @property
    def layers(self) -> list[Layer]:
        """The captured layers, in forward order (known after the first forward)."""
        if self._layers is None:
            raise RuntimeError(
                "no forward pass has been captured yet; run the model inside the probe"
            )
        return list(self._layers)

    def take(self) -> list[torch.Tensor]:
        """Return the representations of the latest forward pass (forward order) and clear them."""
        wanted = self._selection.activation_labels
        if wanted and max(wanted) >= self._activation_count:
            n = self._activation_count
            raise ConfigError(
                f"layer L{max(wanted)} does not exist: this model has {n} default layers "
                f"(L0..L{n - 1}); pick one of those"
            )
        if not self._record:
            raise RuntimeError(
                "nothing captured since the last take(): run the model inside the probe first "
                "(and check the selected layers are used in its forward)"
            )
        layers = [Layer(i, name, call) for i, (name, call, _) in enumerate(self._record)]
        if self._layers is None:
            self._layers = layers
        elif layers != self._layers:
            raise RuntimeError(
                f"this forward captured {len(layers)} layers but the first captured "
                f"{len(self._layers)}; LayerProbe needs the same layers in every forward"
            )
        tensors = [t for _, _, t in self._record]
        self._record = []
        return tensors

    def paused(self) -> _Paused:
        """A context in which forward passes are not captured (e.g. while an attack runs)."""
        return _Paused(self)


class _Paused:
    def __init__(self, probe: LayerProbe) -> None:
        self.probe = probe
        self.was_paused = False

    def __enter__(self) -> None:
        self.was_paused = self.probe._paused
        self.probe._paused = True

    def __exit__(self, *exc: object) -> None:
        self.probe._paused = self.was_paused


def default_layers(model: nn.Module, example: torch.Tensor) -> list[Layer]:
    """The default layers of ``model`` (activations in forward order), found with one forward."""
    with torch.no_grad(), LayerProbe(model) as probe:
        model(example)
        probe.take()
        return probe.layers


def iter_activation_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Activation modules of ``model`` in registration order (forward order may differ)."""
    for name, module in model.named_modules():
        if name and isinstance(module, ACTIVATION_TYPES):
            yield name, module
