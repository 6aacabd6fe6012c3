"""LayerProbe: capture layer representations φ_l(x) with forward hooks.

LSA (Khalooei et al. 2022, §3) compares the output φ_l of each monitored layer l on clean and
perturbed inputs. The probe registers one forward hook per selected module, records outputs in
forward *execution* order and removes every hook when the ``with`` block exits, error or not.

Layer selection (``layers=``):

* ``None`` (default): every activation, in forward order — each call of an activation module
  (outermost only: the ``torch.nn`` activations (:data:`ACTIVATION_TYPES`), timm's and Hugging Face
  transformers' activation classes, found when those packages are loaded, and any class registered
  with :func:`register_activation`), as the paper's reference code hooks them, *and* each call of
  an activation function (:data:`~lsakit.activations.FUNCTIONAL_ACTIVATIONS`: ``F.relu``,
  ``torch.tanh``, ``Tensor.relu``, …, extended with :func:`register_functional_activation`) made
  outside an activation module. Function calls are captured by a ``TorchFunctionMode`` pushed for
  the probed forwards only (the Python stack says which module made a call) and popped when the
  forward ends, error or not. While the mode is active, torch's fused inference fast
  paths (``nn.TransformerEncoderLayer``'s, whose activation runs inside C++) step aside for the
  Python path, so their activations are captured too. Calls inside scripted or compiled modules
  cannot be seen: the probe warns once (:class:`InvisibleActivationWarning`) and names them.
* a module type or a tuple of types, e.g. ``nn.Conv2d``;
* a string: a glob over module names from ``named_modules()``, e.g. ``"features.*"``;
* a sequence of strings, each an exact module name (every call of it), ``name#k`` (only the k-th
  call of a module run several times per forward), a glob, ``type:ClassName`` (every module of
  that class, by name or qualified name), a label ``"L<k>"`` — the k-th representation of the
  *default* selection, i.e. the labels a default LSA run prints — or a printed layer
  ``"L5 (layer2.0.conv1)"``, which selects the named representation (the label is ignored).

Every call of a selected module in one forward pass is one representation. A module called once is
named by its module name; a module called k > 1 times yields k representations named
``name#0 … name#{k-1}``. An activation function's call is named by the module whose ``forward``
made it (the root model is ``""``), the function, and its call number among that module's calls of
that function in the forward: ``features.denseblock1.denselayer1:relu#0``, ``:relu#0``. Representations are labelled ``L0, L1, …`` in the order the probe captured
them. Every name a probe reports (:attr:`Layer.name`) selects exactly that representation again,
so an analysis's layer list can be handed to the regularizer or another probe unchanged.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
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
    functional_names,
)
from lsakit.config.options import split_layers
from lsakit.errors import ConfigError, InputError, warn

LayerSpec: TypeAlias = type[nn.Module] | tuple[type[nn.Module], ...] | str | Sequence[str] | None

_LABEL = re.compile(r"^L(\d+)$")
_PRINTED = re.compile(r"^L\d+ \((.+)\)$")
_CALL = re.compile(r"^(.*)#(\d+)$")
#: An activation function's call: ``module:function#k`` (the root module is ``""``).
_FUNCTIONAL = re.compile(r"^([^:]*):([A-Za-z_][A-Za-z0-9_]*)#(\d+)$")


@dataclass(frozen=True)
class Layer:
    """One captured representation: its position, module name and call number in a forward.

    ``calls`` is how many times the module ran in the forward (1 for most modules). For an
    activation function's call, ``module_name`` is the whole name ``module:fn#k``.
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
    """Modules to hook, which of their calls to keep, the activation-function calls to keep, and
    which default-order activation calls to keep (for ``L<k>`` names)."""

    always: frozenset[str]  # module names captured on every call
    calls: dict[str, frozenset[int]]  # module name → the calls ``name#k`` asks for
    activation_labels: frozenset[int]  # indices k of ``L<k>`` in the default order
    default: bool = False  # the default selection: every activation, modules and functions
    functional: frozenset[str] = frozenset()  # names ``module:fn#k`` of function calls to keep

    def hooked(self) -> frozenset[str]:
        return self.always | frozenset(self.calls)

    @property
    def captures_functional(self) -> bool:
        """Whether probed forwards run the function mode (default, labels or function names)."""
        return self.default or bool(self.functional) or bool(self.activation_labels)


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
    """The default selection found nothing in a forward: name what may be activations."""
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
        else "register its activation class with lsakit.register_activation(cls) or its "
        "function with lsakit.register_functional_activation(fn, name), or pass layers="
    )
    return ConfigError(
        f"{type(model).__name__} ran no activation module or activation function lsakit knows "
        f"in its forward; {found} (a module type such as nn.Linear, module names or globs)"
    )


def _resolve(model: nn.Module, layers: LayerSpec) -> _Selection:
    named = dict(model.named_modules())
    del named[""]  # the root is never a layer
    if layers is None:  # a model with no activation module may call functions: see take()
        return _Selection(frozenset(_activation_modules(model)), {}, frozenset(), default=True)
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
    functional: set[str] = set()
    for spec in specs:
        if not isinstance(spec, str):
            raise ConfigError(f"layers= entries must be module names, globs or L<k>, got {spec!r}")
        spec = unprinted(spec.strip())
        label = _LABEL.match(spec)
        call = _CALL.match(spec)
        function = _FUNCTIONAL.match(spec)
        if label is not None and spec not in named:
            labels.add(int(label.group(1)))
        elif function is not None and spec not in named:
            functional.add(_check_functional(spec, function, named))
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
        functional=frozenset(functional),
    )


def _check_functional(spec: str, match: re.Match[str], named: dict[str, nn.Module]) -> str:
    """A function call's name ``module:fn#k``, checked against the modules and the known
    activation functions; its call number is checked by the forward (:meth:`LayerProbe.take`)."""
    module, function = match.group(1), match.group(2)
    if module and module not in named:
        close = difflib.get_close_matches(module, list(named), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see model.named_modules()"
        raise ConfigError(f"unknown layer {spec!r}: no module {module!r}; {hint}")
    known = functional_names()
    if function not in known:
        close = difflib.get_close_matches(function, sorted(known), n=3)
        hint = (
            f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(known))}"
        )
        raise ConfigError(
            f"unknown layer {spec!r}: {function!r} is no activation function lsakit captures; "
            f"{hint} (register others with lsakit.register_functional_activation)"
        )
    return spec


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


class _FunctionalCapture(TorchFunctionMode):
    """Activation-function calls made outside activation modules during one probed forward,
    each handed to the probe with its name ``module:fn#k``.

    Which module made a call is read from the Python stack when (and only when) an activation
    function runs: the innermost frame of a method of one of the model's modules names it (the
    root model is ``""``), and a call made inside an activation module's method is that module's
    own work, captured by its hook. No module hook is installed, so module calls cost nothing
    extra (global module hooks would put every module call of the forward on torch's slow path).
    Entered by :meth:`start` when the root forward starts, left by :meth:`stop` when it ends.
    """

    def __init__(self, probe: LayerProbe) -> None:
        super().__init__()
        self.probe = probe
        self.names = probe._names
        self.activations = probe._activation_ids
        self.root = id(probe.model)
        self.counts: Counter[tuple[str, str]] = Counter()

    def __torch_function__(
        self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        name = FUNCTIONAL_ACTIVATIONS.get(func)
        if name is not None:
            module = self._caller(sys._getframe(1))
            if module is not None:
                k = self.counts[(module, name)]
                self.counts[(module, name)] = k + 1
                self.probe._functional_call(f"{module}:{name}#{k}", out)
        return out

    def _caller(self, frame: Any) -> str | None:
        """The name of the innermost module whose method is on the stack (``""`` the root),
        None inside an activation module."""
        caller: str | None = None
        while frame is not None:
            code = frame.f_code
            if code.co_argcount and code.co_varnames[0] == "self":
                key = id(frame.f_locals.get("self"))
                if key in self.activations:
                    return None
                if caller is None:
                    caller = self.names.get(key)
                if key == self.root:
                    break
            frame = frame.f_back
        return "" if caller is None else caller

    def start(self) -> None:
        self.__enter__()  # type: ignore[no-untyped-call]

    def stop(self) -> None:
        self.__exit__(None, None, None)  # type: ignore[no-untyped-call]


def _unseen_modules(model: nn.Module) -> list[str]:
    """Submodules whose forward runs where no Python function call is seen: scripted or compiled
    (``torch.jit.script``, ``torch.compile``), outermost only."""

    dynamo = sys.modules.get("torch._dynamo.eval_frame")  # nothing is compiled before it loads
    compiled = getattr(dynamo, "OptimizedModule", torch.jit.ScriptModule)
    found: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, (torch.jit.ScriptModule, compiled)) and not any(
            name.startswith(f"{parent}.") for parent in found
        ):
            found.append(name)
    return found


def _unseen_message(model: nn.Module) -> str | None:
    """Where activations may run unseen: scripted or compiled submodules."""
    unseen = _unseen_modules(model)
    if not unseen:
        return None
    names = ", ".join(f"'{n}'" if n else type(model).__name__ for n in unseen[:6])
    return (
        f"activations inside the scripted or compiled modules of {type(model).__name__} "
        f"({names}{' …' if len(unseen) > 6 else ''}) run code no hook or function mode sees and "
        f"are not captured; select those modules' outputs by name, or analyse the eager model"
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
        self._modules = dict(model.named_modules())
        self._handles: list[RemovableHandle] = []
        self._record: list[tuple[str, int, torch.Tensor]] = []
        self._calls: dict[str, int] = {}
        self._activation_count = 0
        self._layers: list[Layer] | None = None
        self._paused = False
        self._activations = frozenset(_activation_modules(model))
        self._names = {id(m): n for n, m in self._modules.items()}
        self._activation_ids = frozenset(id(self._modules[n]) for n in self._activations)
        self._capture: _FunctionalCapture | None = None
        self._functions_seen: frozenset[str] = frozenset()  # ``module:fn#k`` of the last forward
        self._warned = False
        self._probed = False  # a probed forward ran since the last take()
        self._reducer: Callable[[int, torch.Tensor], torch.Tensor] | None = None
        self._stop_at: int | None = None  # truncated(): stop the forward at this many captures
        #: 0 after a probed forward that captured activation functions (every call a Python
        #: function mode sees is captured); None before, or for selections of modules only
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
        if self._capture is not None:
            capture, self._capture = self._capture, None
            capture.stop()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _start_forward(self, module: nn.Module, args: Any) -> None:
        if self._paused or self._capture is not None:  # an attack's forward, or a nested one
            return
        self._record = []
        self._calls = {}
        self._activation_count = 0
        self._probed = True
        if self._selection.captures_functional:
            capture = _FunctionalCapture(self)
            capture.start()
            self._capture = capture

    def _end_forward(self, module: nn.Module, args: Any, output: Any) -> None:
        capture = self._capture
        if capture is None:
            return
        self._capture = None
        capture.stop()
        if self._selection.functional:  # only a selection naming calls checks them
            self._functions_seen = frozenset(
                f"{where}:{fn}#{k}" for (where, fn), n in capture.counts.items() for k in range(n)
            )
        self.invisible_activation_calls = 0
        if not self._warned:
            self._warned = True
            message = _unseen_message(self.model)
            if message is not None:
                warn(InvisibleActivationWarning(message), stacklevel=2)

    def _functional_call(self, name: str, output: Any) -> None:
        """One activation-function call outside activation modules (from the function mode)."""
        keep = self._selection.default or name in self._selection.functional
        keep = keep or self._activation_count in self._selection.activation_labels
        self._activation_count += 1
        if keep and isinstance(output, torch.Tensor):
            self._calls[name] = 1
            self._record.append((name, 0, self._kept(output)))
            self._stop_if_complete()

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
            self._record.append((name, call, self._kept(out)))
            self._stop_if_complete()

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
        """Return the representations of the latest forward pass (forward order) and clear them.

        Returns:
            One tensor per captured layer, in forward order (:attr:`layers`): detached copies
            by default, the live outputs with ``detach=False``, or what ``reduce`` returned
            inside :meth:`reducing`.
        """
        wanted = self._selection.activation_labels
        if wanted and max(wanted) >= self._activation_count:
            n = self._activation_count
            raise ConfigError(
                f"layer L{max(wanted)} does not exist: this model has {n} default layers "
                f"(L0..L{n - 1}); pick one of those"
            )
        missing = sorted(self._selection.functional - self._functions_seen)
        if missing and self.invisible_activation_calls is not None:
            seen = ", ".join(sorted(self._functions_seen)[:8]) or "none"
            raise ConfigError(
                f"layer {missing[0]} was not called in the forward; the activation-function "
                f"calls it made: {seen}"
            )
        probed, self._probed = self._probed, False
        if not self._record:
            if self._selection.default and probed:
                raise _no_activation_error(self.model)
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

    def _kept(self, out: torch.Tensor) -> torch.Tensor:
        """What the record keeps of a captured output: the reducer's result, a detached copy, or
        the output itself (``detach=False``)."""
        if self._reducer is not None:  # used at once, before any later in-place op can run
            return self._reducer(len(self._record), out.detach() if self.detach else out)
        # A detached view shares storage with the live activation; clone it so a later in-place
        # op in the model (e.g. ``out += residual``) cannot change what was captured.
        return out.detach().clone() if self.detach else out

    def _stop_if_complete(self) -> None:
        if self._stop_at is not None and len(self._record) == self._stop_at:
            raise _Complete

    @contextlib.contextmanager
    def truncated(self) -> Iterator[None]:
        """A context in which a forward stops as soon as its last selected representation is
        captured (once a first forward has fixed the layers): what runs after that layer is
        skipped — its compute, and its side effects such as BatchNorm statistics and dropout's
        random draws. The representations are those of a whole forward; the model's output is
        not computed. The trainer's extra clean forward for AT-LR runs this way.

        Yields:
            Nothing (None); run the model inside the block and call :meth:`take` as usual.
        """
        self._stop_at = None if self._layers is None else len(self._layers)
        try:
            yield
        except _Complete:
            pass
        finally:
            self._stop_at = None

    @contextlib.contextmanager
    def reducing(self, reduce: Callable[[int, torch.Tensor], torch.Tensor]) -> Iterator[None]:
        """A context in which each captured representation is handed to ``reduce(k, rep)`` the
        moment its layer runs (k its position in the forward order) and :meth:`take` returns
        what ``reduce`` returned instead: a forward then holds no representation beyond the one
        being reduced (LSA compares each layer with its clean representation this way).

        Args:
            reduce: called as ``reduce(k, rep)`` with ``rep`` the captured output (detached when
                the probe detaches); what it returns is kept in ``rep``'s place.

        Yields:
            Nothing (None); the previous reducer, if any, is restored on exit.
        """
        previous, self._reducer = self._reducer, reduce
        try:
            yield
        finally:
            self._reducer = previous

    def paused(self) -> _Paused:
        """A context in which forward passes are not captured (e.g. while an attack runs).

        Returns:
            A context manager (entering it gives None) that restores the probe's previous
            paused state on exit, so pauses nest.
        """
        return _Paused(self)


class _Complete(Exception):
    """Raised from a hook to end a truncated forward (:meth:`LayerProbe.truncated`)."""


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
