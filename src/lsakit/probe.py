"""LayerProbe: capture layer representations φ_l(x) with forward hooks.

LSA (Khalooei et al. 2022, §3) compares the output φ_l of each monitored layer l on clean and
perturbed inputs. The probe registers one forward hook per selected module, records outputs in
forward *execution* order and removes every hook when the ``with`` block exits, error or not.

Layer selection (``layers=``):

* ``None`` (default): every activation module, outermost only — the ``torch.nn`` activations
  (:data:`ACTIVATION_TYPES`), timm's and Hugging Face transformers' activation classes (found when
  those packages are loaded), and any class registered with :func:`register_activation`; as the
  paper's reference code does. Functional activations (``F.relu`` in a ``forward``) are invisible
  to hooks: during the first forward the probe counts them (a ``TorchFunctionMode``) and warns
  once, with how many and where (:class:`InvisibleActivationWarning`).
* a module type or a tuple of types, e.g. ``nn.Conv2d``;
* a string: a glob over module names from ``named_modules()``, e.g. ``"features.*"``;
* a sequence of strings, each an exact module name (every call of it), ``name#k`` (only the k-th
  call of a module run several times per forward), a glob, ``type:ClassName`` (every module of
  that class, by name or qualified name), a label ``"L<k>"`` — the k-th representation of the
  *default* selection, i.e. the labels a default LSA run prints — or a printed layer
  ``"L5 (layer2.0.conv1)"``, which selects the named representation (the label is ignored).

Every call of a selected module in one forward pass is one representation. A module called once is
named by its module name; a module called k > 1 times yields k representations named
``name#0 … name#{k-1}``. Representations are labelled ``L0, L1, …`` in the order the probe captured
them. Every name a probe reports (:attr:`Layer.name`) selects exactly that representation again,
so an analysis's layer list can be handed to the regularizer or another probe unchanged.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeAlias

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

from lsakit.activations import (
    ACTIVATION_LIKE,
    FUNCTIONAL_ACTIVATIONS,
    InvisibleActivationWarning,
    activation_types,
)
from lsakit.config.options import split_layers
from lsakit.errors import ConfigError, InputError

LayerSpec: TypeAlias = type[nn.Module] | tuple[type[nn.Module], ...] | str | Sequence[str] | None

_LABEL = re.compile(r"^L(\d+)$")
_PRINTED = re.compile(r"^L\d+ \((.+)\)$")
_CALL = re.compile(r"^(.*)#(\d+)$")


@dataclass(frozen=True)
class Layer:
    """One captured representation: its position, module name and call number in a forward.

    ``calls`` is how many times the module ran in the forward (1 for most modules).
    """

    index: int
    module_name: str
    call: int = 0
    calls: int = 1

    @property
    def label(self) -> str:
        """The paper's layer name: ``L<index>``."""
        return f"L{self.index}"

    @property
    def name(self) -> str:
        """The module name, with ``#k`` for the k-th call of a module run several times: a name
        that selects exactly this representation again."""
        return self.module_name if self.calls == 1 else f"{self.module_name}#{self.call}"

    def __str__(self) -> str:
        return f"{self.label} ({self.name})"


@dataclass(frozen=True)
class _Selection:
    """Modules to hook, which of their calls to keep, and which default-order activation calls
    to keep (for ``L<k>`` names)."""

    always: frozenset[str]  # module names captured on every call
    calls: dict[str, frozenset[int]]  # module name → the calls ``name#k`` asks for
    activation_labels: frozenset[int]  # indices k of ``L<k>`` in the default order
    default: bool = False  # the default activation selection (functional calls are counted)

    def hooked(self) -> frozenset[str]:
        return self.always | frozenset(self.calls)


def unprinted(spec: str) -> str:
    """A layer as an analysis prints it, ``"L5 (layer2.0.conv1)"``, to the name it selects;
    any other spec unchanged."""
    printed = _PRINTED.match(spec)
    return spec if printed is None else printed.group(1)


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _activation_modules(model: nn.Module) -> list[str]:
    """Names of the activation modules of ``model``, outermost only (an activation module inside
    another, e.g. a wrapper's inner nn.GELU, would capture the same values twice)."""
    types = activation_types()
    chosen: list[str] = []
    for name, module in model.named_modules():
        if not name or not isinstance(module, types):
            continue
        if any(name.startswith(parent + ".") for parent in chosen):
            continue
        chosen.append(name)
    return chosen


def _activation_like(module: nn.Module) -> bool:
    """A class that may be an activation lsakit does not know: its name says so, or it is a
    parameter-free leaf module defined outside torch.nn (an element-wise function, typically)."""
    if ACTIVATION_LIKE.search(type(module).__name__):
        return True
    leaf = next(module.children(), None) is None and next(module.parameters(), None) is None
    return leaf and not type(module).__module__.startswith("torch.")


def _no_activation_error(model: nn.Module) -> ConfigError:
    seen = sorted(
        {
            f"{type(m).__module__}.{type(m).__qualname__}"
            for _, m in model.named_modules()
            if m is not model and _activation_like(m)
        }
    )
    found = (
        f"activation-like classes in it: {', '.join(seen)} — register them with "
        f"lsakit.register_activation(cls), or pass layers="
        if seen
        else "its activations may be functions such as F.relu, which hooks cannot see; use "
        "activation modules or pass layers="
    )
    return ConfigError(
        f"{type(model).__name__} has no activation modules lsakit knows; {found} (a module type "
        f"such as nn.Linear, module names or globs)"
    )


def _resolve(model: nn.Module, layers: LayerSpec) -> _Selection:
    named = dict(model.named_modules())
    del named[""]  # the root is never a layer
    if layers is None:
        chosen = frozenset(_activation_modules(model))
        if not chosen:
            raise _no_activation_error(model)
        return _Selection(chosen, {}, frozenset(), default=True)
    if isinstance(layers, type) or (
        isinstance(layers, tuple) and layers and all(isinstance(t, type) for t in layers)
    ):
        types: tuple[type[nn.Module], ...] = layers if isinstance(layers, tuple) else (layers,)
        chosen = frozenset(n for n, m in named.items() if isinstance(m, types))
        if not chosen:
            names = ", ".join(t.__name__ for t in types)
            raise ConfigError(f"the model has no module of type {names}; pick another layers= type")
        return _Selection(chosen, {}, frozenset())
    if not isinstance(layers, (str, list, tuple, set, frozenset)):
        raise ConfigError(
            f"layers= must be None, a module type, a name, glob or L<k> label, or a list of them; "
            f"got {type(layers).__name__} {layers!r}"
        )
    specs = [layers] if isinstance(layers, str) else list(layers)
    if not specs:
        raise ConfigError("layers= is empty; pass None for the default activation layers")
    always: set[str] = set()
    calls: dict[str, set[int]] = {}
    labels: set[int] = set()
    for spec in specs:
        if not isinstance(spec, str):
            raise ConfigError(f"layers= entries must be module names, globs or L<k>, got {spec!r}")
        spec = unprinted(spec.strip())
        label = _LABEL.match(spec)
        call = _CALL.match(spec)
        if label is not None and spec not in named:
            labels.add(int(label.group(1)))
        elif spec.startswith("type:"):
            wanted = spec[len("type:") :].strip()
            matches = [
                n
                for n, m in named.items()
                if wanted in (type(m).__name__, f"{type(m).__module__}.{type(m).__qualname__}")
            ]
            if not matches:
                classes = sorted({type(m).__name__ for m in named.values()})
                close = difflib.get_close_matches(wanted, classes, n=3)
                hint = f"did you mean {', '.join(close)}?" if close else f"classes: {classes[:12]}"
                raise ConfigError(f"layer selection {spec!r} matches no module; {hint}")
            always.update(matches)
        elif _is_glob(spec):
            matches = fnmatch.filter(named, spec)
            if not matches:
                raise ConfigError(
                    f"layer pattern {spec!r} matches no module; see model.named_modules()"
                )
            always.update(matches)
        elif spec in named:
            always.add(spec)
        elif call is not None and call.group(1) in named:
            calls.setdefault(call.group(1), set()).add(int(call.group(2)))
        else:
            close = difflib.get_close_matches(spec, list(named), n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "see model.named_modules()"
            raise ConfigError(f"unknown layer {spec!r}: {hint}")
    return _Selection(
        frozenset(always),
        {name: frozenset(ks) for name, ks in calls.items() if name not in always},
        frozenset(labels),
    )


def describe_selection(layers: LayerSpec) -> list[str] | None:
    """A JSON-able form of a layer selection (None = the default activations), which
    :class:`LayerProbe` accepts again: types become ``type:module.Class`` entries."""
    if layers is None:
        return None
    if isinstance(layers, type):
        layers = (layers,)
    if isinstance(layers, tuple) and layers and all(isinstance(t, type) for t in layers):
        return [f"type:{t.__module__}.{t.__qualname__}" for t in layers]
    if isinstance(layers, str):
        return [layers]
    return [str(s) for s in layers]


def parse_layers(text: str | None) -> list[str] | None:
    """A command-line layer selection (:func:`lsakit.config.options.split_layers`)."""
    return split_layers(text)


class _FunctionalCounter(TorchFunctionMode):
    """Counts activation functions called while no captured activation module is running,
    attributed to the innermost module running (global module hooks, first forward only)."""

    def __init__(self, model: nn.Module, activations: frozenset[str]) -> None:
        super().__init__()
        self.names = {id(m): n for n, m in model.named_modules()}
        self.activations = {id(m) for n, m in model.named_modules() if n in activations}
        self.stack: list[nn.Module] = []
        self.inside = 0
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self._handles: list[RemovableHandle] = []

    def __torch_function__(
        self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None
    ) -> Any:
        name = FUNCTIONAL_ACTIVATIONS.get(func)
        if name is not None and self.inside == 0:
            where = self.stack[-1] if self.stack else None
            module_name = "" if where is None else self.names.get(id(where), "?")
            cls = "" if where is None else type(where).__name__
            self.counts[(name, module_name, cls)] += 1
        return func(*args, **(kwargs or {}))

    def _pre(self, module: nn.Module, args: Any) -> None:
        self.stack.append(module)
        if id(module) in self.activations:
            self.inside += 1

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.stack and self.stack[-1] is module:
            self.stack.pop()
        if id(module) in self.activations:
            self.inside -= 1

    def start(self) -> None:
        from torch.nn.modules.module import (
            register_module_forward_hook,
            register_module_forward_pre_hook,
        )

        self._handles = [
            register_module_forward_pre_hook(self._pre),
            register_module_forward_hook(self._post, always_call=True),
        ]
        self.__enter__()  # type: ignore[no-untyped-call]

    def stop(self) -> None:
        self.__exit__(None, None, None)  # type: ignore[no-untyped-call]
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def message(self, root: nn.Module) -> str | None:
        total = sum(self.counts.values())
        if total == 0:
            return None
        parts = []
        for (fn, module_name, cls), n in self.counts.most_common(6):
            where = (
                f"{type(root).__name__}.forward"
                if module_name == ""
                else f"'{module_name}' ({cls})"
            )
            parts.append(f"{n}× {fn} in {where}")
        more = "" if len(self.counts) <= 6 else f" and {len(self.counts) - 6} more places"
        return (
            f"{total} activation call{'s' if total != 1 else ''} ran as "
            f"{'functions' if total != 1 else 'a function'} outside activation modules and "
            f"{'are' if total != 1 else 'is'} invisible to LSA: {', '.join(parts)}{more}; only module "
            f"activations are measured (use activation modules, or pass layers= to monitor other "
            f"modules)"
        )


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
        self._activations = frozenset(_activation_modules(model))
        self._counter: _FunctionalCounter | None = None
        self._counted = not self._selection.default  # count functional calls once, if default
        #: after the first forward: how many activation calls ran as functions outside modules
        self.invisible_activation_calls: int | None = None

    # -- hooks ---------------------------------------------------------------------------------
    def __enter__(self) -> LayerProbe:
        if self._handles:
            raise RuntimeError("LayerProbe is already active; it cannot be entered twice")
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._start_forward))
            self._handles.append(
                self.model.register_forward_hook(self._end_forward, always_call=True)
            )
            hooked = self._selection.hooked()
            for name, module in self.model.named_modules():
                if not name:
                    continue
                activation = name in self._activations
                if name in hooked or (activation and self._selection.activation_labels):
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
        if self._counter is not None:
            self._counter.stop()
            self._counter = None
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _start_forward(self, module: nn.Module, args: Any) -> None:
        if not self._paused:
            self._record = []
            self._calls = {}
            self._activation_count = 0
            if not self._counted and self._counter is None:
                self._counter = _FunctionalCounter(self.model, self._activations)
                self._counter.start()

    def _end_forward(self, module: nn.Module, args: Any, output: Any) -> None:
        counter = self._counter
        if counter is None:
            return
        counter.stop()
        self._counter = None
        self._counted = True
        self.invisible_activation_calls = sum(counter.counts.values())
        message = counter.message(self.model)
        if message is not None:
            warnings.warn(InvisibleActivationWarning(message), stacklevel=2)

    def _hook(self, name: str, activation: bool) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self._paused:
                return
            call = self._calls.get(name, 0)
            self._calls[name] = call + 1
            keep = name in self._selection.always or call in self._selection.calls.get(
                name, frozenset()
            )
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
        layers = [
            Layer(i, name, call, self._calls.get(name, 1))
            for i, (name, call, _) in enumerate(self._record)
        ]
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


def resolve_layers(model: nn.Module, layers: LayerSpec, example: torch.Tensor) -> list[Layer]:
    """The representations a probe on ``layers`` captures, in forward order, found with one
    dry forward of ``example`` (no gradients, in the model's current modes: wrap the call in
    ``lsakit._torch.eval_mode`` for a model whose train mode draws random numbers or updates
    buffers).

    The one layer resolver: labels (``L<k>``), globs, ``type:`` names and modules called several
    times (``name#k``) become :class:`Layer` entries whose ``name`` selects exactly that
    representation again. An unknown name, an empty pattern or an ``L<k>`` beyond the model's
    layers raises ConfigError.
    """
    with torch.no_grad(), LayerProbe(model, layers) as probe:
        model(example)
        probe.take()
        return probe.layers


def check_layers(model: nn.Module, layers: LayerSpec) -> None:
    """Check a layer selection against the model's modules without running it (names, globs,
    ``type:`` names); labels are checked by :func:`resolve_layers`. ConfigError when wrong."""
    _resolve(model, layers)


def default_layers(model: nn.Module, example: torch.Tensor) -> list[Layer]:
    """The default layers of ``model`` (activations in forward order), found with one forward."""
    return resolve_layers(model, None, example)


def iter_activation_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """Activation modules of ``model`` (the default selection's modules) in registration order
    (forward order may differ)."""
    modules = dict(model.named_modules())
    for name in _activation_modules(model):
        yield name, modules[name]
