"""The declared input domain: the one place that says where valid inputs live.

Every consumer of inputs reads the domain in force when it runs — validation
(:func:`~lsakit._checks.check_inputs`), every attack's projection and random start, every noise's
clipping (and the values salt and pepper write), the FGSM sweep, the AutoAttack-style suite's
membership check, the gradient-masking checks — and results record it. There is no per-function
flag: a domain is declared once, with :func:`input_domain`, and everything inside follows it::

    with lsakit.input_domain(None):                 # unbounded inputs (tabular z-scores, embeddings)
        result = lsakit.analyze(model, loader, {"fgsm": FGSM(model, eps=0.1)})

    with lsakit.input_domain((-1.0, 1.0)):          # one box for every element
        ...
    with lsakit.input_domain((low, high)):          # per-feature box: tensors broadcastable to one
        ...                                         # sample, e.g. (C, 1, 1) or (D,)

The default, when nothing is declared, is the unit box [0, 1] (images as pixels in [0, 1], any
normalization inside the model), so code written before domains existed behaves exactly as before.
A data set in the registry carries its own domain (:func:`lsakit.data.domain`), and the trainer,
the CLI and the experiment runner declare it for the work they run.

Why a context rather than an argument on every attack: the domain is a property of the data the
whole computation runs on, and an analysis touches a dozen consumers (validation, noises, attacks
inside objectives, sweeps); a context declared where the data is chosen reaches all of them, as
``torch.no_grad()`` does, and an attack object built once can be used on any data set.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import torch
from torch import Tensor

from lsakit.errors import ConfigError, InputError


def _bound_tensor(value: object, name: str) -> Tensor:
    if isinstance(value, bool):
        raise ConfigError(f"input domain {name} must be a number or a tensor, got {value!r}")
    if value is None:
        value = -math.inf if name == "low" else math.inf
    try:
        tensor = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(
            f"input domain {name} must be a number, a list of numbers or a tensor, got {value!r}"
        ) from None
    if bool(torch.isnan(tensor).any()):
        raise ConfigError(f"input domain {name} contains NaN; give numbers (None = no bound)")
    return tensor


def _broadcast_shapes(*shapes: Sequence[int]) -> tuple[int, ...]:
    """torch.broadcast_shapes, typed (RuntimeError when the shapes do not broadcast)."""
    out: Any = torch.broadcast_shapes(*shapes)  # type: ignore[no-untyped-call]
    return tuple(int(d) for d in out)


def _fmt(value: float) -> str:
    if value == math.inf:
        return "inf"
    if value == -math.inf:
        return "-inf"
    return f"{value:g}"


@dataclass(frozen=True, eq=False)
class InputDomain:
    """A box ``low ≤ x ≤ high`` for every element of a sample; ±inf entries are unbounded.

    ``low`` and ``high`` are float64 CPU tensors: 0-dim for one bound shared by every element, or
    of a shape that broadcasts against one sample (no batch dimension), e.g. ``(C, 1, 1)`` for
    per-channel or ``(D,)`` for per-feature bounds. Build one with :func:`as_domain`.
    """

    low: Tensor
    high: Tensor

    def __post_init__(self) -> None:
        try:
            _broadcast_shapes(self.low.shape, self.high.shape)
        except RuntimeError:
            raise ConfigError(
                f"input domain bounds of shapes {tuple(self.low.shape)} and "
                f"{tuple(self.high.shape)} do not broadcast; give bounds of one shape"
            ) from None
        # one bound pair: compared as Python numbers, so that building the module's constants
        # (UNIT, UNBOUNDED) runs no torch kernel at import (lsakit.numerics must come first)
        if self.scalar:
            wrong = float(self.low) > float(self.high)
        else:
            wrong = bool((self.low > self.high).any())
        if wrong:
            raise ConfigError(f"input domain has low > high somewhere ({self.describe()})")

    # -- properties ----------------------------------------------------------------------------
    @property
    def scalar(self) -> bool:
        """One bound pair for every element (no per-feature bounds)."""
        return self.low.dim() == 0 and self.high.dim() == 0

    @property
    def unbounded(self) -> bool:
        """No bound at all: attacks and noises never clip."""
        return bool(torch.isinf(self.low).all() and torch.isinf(self.high).all()) and bool(
            (self.low < 0).all() and (self.high > 0).all()
        )

    @property
    def bounded(self) -> bool:
        """Every element has a finite low and high bound."""
        return bool(torch.isfinite(self.low).all() and torch.isfinite(self.high).all())

    @property
    def is_unit(self) -> bool:
        """The default box [0, 1]."""
        return self.scalar and float(self.low) == 0.0 and float(self.high) == 1.0

    def width(self) -> float:
        """The largest ``high − low`` over the elements (inf when some element is unbounded).

        Returns:
            The largest width, in input units (``inf`` when some element is unbounded).
        """
        return float((self.high - self.low).max())

    # -- use -----------------------------------------------------------------------------------
    def _on(self, bound: Tensor, like: Tensor) -> Tensor:
        return bound.to(device=like.device, dtype=like.dtype)

    def clamp(self, x: Tensor) -> Tensor:
        """``x`` clipped into the box (returned unchanged, not copied, when unbounded).

        Args:
            x: a tensor of samples, e.g. a batch ``(N, C, H, W)``; per-feature bounds broadcast
                against its trailing dimensions.

        Returns:
            ``x`` clipped into ``[low, high]`` element-wise, same shape, dtype and device (``x``
            itself when the domain is unbounded).
        """
        if self.unbounded:
            return x
        if self.scalar:
            return x.clamp(float(self.low), float(self.high))
        return torch.clamp(x, min=self._on(self.low, x), max=self._on(self.high, x))

    def low_like(self, x: Tensor) -> Tensor:
        """The low bound broadcast to ``x``'s shape (salt/pepper and FAB need it element-wise).

        Args:
            x: the tensor whose shape, dtype and device the bound takes.

        Returns:
            The low bound expanded to ``x``'s shape (an expanded view: do not write into it).
        """
        return self._on(self.low, x).expand_as(x)

    def high_like(self, x: Tensor) -> Tensor:
        """The high bound broadcast to ``x``'s shape.

        Args:
            x: the tensor whose shape, dtype and device the bound takes.

        Returns:
            The high bound expanded to ``x``'s shape (an expanded view: do not write into it).
        """
        return self._on(self.high, x).expand_as(x)

    def contains(self, x: Tensor, *, atol: float = 0.0) -> bool:
        """Whether every element of ``x`` lies in the box (within ``atol``).

        Args:
            x: the tensor to check (samples or a batch; bounds broadcast against it).
            atol: tolerance ≥ 0 in input units: values up to ``atol`` outside a bound still
                count as inside.

        Returns:
            True when ``low − atol ≤ x ≤ high + atol`` everywhere (always True when unbounded).
        """
        if self.unbounded:
            return True
        if self.scalar:
            return (
                float(x.min()) >= float(self.low) - atol
                and float(x.max()) <= float(self.high) + atol
            )
        below = x < self._on(self.low, x) - atol
        above = x > self._on(self.high, x) + atol
        return not bool((below | above).any())

    def check(self, x: Tensor, name: str = "x") -> None:
        """Raise InputError naming the bounds when ``x`` has a value outside the box.

        Args:
            x: the tensor to check (no tolerance).
            name: how the message names ``x``.
        """
        if self.contains(x):
            return
        lo, hi = float(x.min()), float(x.max())
        hint = (
            "scale inputs to [0, 1] and put any normalization inside the model "
            "(lsakit.models.Normalize), or declare the domain your data lives in "
            "(lsakit.input_domain(...), --domain)"
            if self.is_unit
            else "fix the data or declare the domain it lives in (lsakit.input_domain(...), "
            "--domain)"
        )
        raise InputError(
            f"{name} has values in [{lo:.4g}, {hi:.4g}], outside {self.describe()} (the declared "
            f"input domain); {hint}"
        )

    def check_sample_shape(self, shape: Sequence[int]) -> None:
        """Refuse per-feature bounds that do not broadcast against one sample of ``shape``.

        Raises InputError unless the bounds broadcast against ``shape`` without enlarging it.

        Args:
            shape: one sample's shape, without the batch dimension (e.g. ``(C, H, W)``).
        """
        try:
            out = _broadcast_shapes(self.low.shape, self.high.shape, tuple(shape))
        except RuntimeError:
            out = None
        if out != tuple(shape):
            raise InputError(
                f"the input domain's bounds have shape {tuple(self.low.shape)}/"
                f"{tuple(self.high.shape)}, which does not broadcast against a sample of shape "
                f"{tuple(shape)}; give scalars or bounds of shape {tuple(shape)}"
            )

    # -- text and JSON ---------------------------------------------------------------------------
    def describe(self) -> str:
        """``[0, 1]``, ``unbounded``, ``[-1, 1]`` or a per-feature summary.

        Returns:
            ``"unbounded"``, ``"[LOW, HIGH]"`` for one bound pair, or ``"per-feature box SHAPE
            within [MIN LOW, MAX HIGH]"``.
        """
        if self.unbounded:
            return "unbounded"
        if self.scalar:
            return f"[{_fmt(float(self.low))}, {_fmt(float(self.high))}]"
        lo, hi = float(self.low.min()), float(self.high.max())
        shape = tuple(_broadcast_shapes(self.low.shape, self.high.shape))
        return f"per-feature box {shape} within [{_fmt(lo)}, {_fmt(hi)}]"

    def to_json(self) -> dict[str, Any]:
        """``{"low": …, "high": …}`` with numbers or nested lists; null stands for ∓inf.

        Returns:
            A JSON-able dict with keys ``"low"`` and ``"high"``: a number or nested lists of
            numbers each, None for an infinite bound.
        """

        def encode(t: Tensor) -> Any:
            values = t.tolist()

            def walk(v: Any) -> Any:
                if isinstance(v, list):
                    return [walk(e) for e in v]
                return None if math.isinf(v) else v

            return walk(values)

        return {"low": encode(self.low), "high": encode(self.high)}

    @classmethod
    def from_json(cls, data: object) -> InputDomain:
        """The inverse of :meth:`to_json`.

        Args:
            data: a dict with exactly the keys ``"low"`` and ``"high"`` (numbers or nested lists;
                None for no bound on that side). Anything else raises ConfigError.

        Returns:
            The domain ``data`` describes.
        """
        if not isinstance(data, dict) or set(data) != {"low", "high"}:
            raise ConfigError(f"an input domain is {{'low': …, 'high': …}}, got {data!r}")

        def decode(v: Any, fill: float) -> Any:
            if isinstance(v, list):
                return [decode(e, fill) for e in v]
            return fill if v is None else v

        return cls(
            _bound_tensor(decode(data["low"], -math.inf), "low"),
            _bound_tensor(decode(data["high"], math.inf), "high"),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InputDomain):
            return NotImplemented
        return (
            self.low.shape == other.low.shape
            and self.high.shape == other.high.shape
            and bool(torch.equal(self.low, other.low))
            and bool(torch.equal(self.high, other.high))
        )

    def __hash__(self) -> int:
        return hash((tuple(self.low.flatten().tolist()), tuple(self.high.flatten().tolist())))

    def __repr__(self) -> str:
        return f"InputDomain({self.describe()})"


#: The default domain: every element in [0, 1].
UNIT = InputDomain(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
#: No bounds: attacks and noises never clip (tabular z-scores, embedding space).
UNBOUNDED = InputDomain(
    torch.tensor(-math.inf, dtype=torch.float64), torch.tensor(math.inf, dtype=torch.float64)
)


def as_domain(spec: object) -> InputDomain:
    """An :class:`InputDomain` from a declaration.

    Accepts an InputDomain; ``None``, ``"unbounded"`` or ``"none"`` (no bounds); ``"unit"`` or
    ``"0,1"``-style text ``"LOW,HIGH"`` (``inf``/``-inf`` allowed); a pair ``(low, high)`` of
    numbers, lists or tensors (``None`` in a pair = no bound on that side); or the JSON form
    ``{"low": …, "high": …}``.
    """
    if isinstance(spec, InputDomain):
        return spec
    if spec is None:
        return UNBOUNDED
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text in ("unbounded", "none", "inf", "real"):
            return UNBOUNDED
        if text in ("unit", "[0,1]", "0,1"):
            return UNIT
        parts = text.strip("[]()").split(",")
        if len(parts) == 2:
            try:
                lo, hi = (float(p) for p in parts)
            except ValueError:
                pass
            else:
                return as_domain((lo, hi))
        raise ConfigError(
            f"input domain {spec!r} is not understood; use 'unit', 'unbounded' or 'LOW,HIGH' "
            f"(e.g. '-1,1')"
        )
    if isinstance(spec, dict):
        return InputDomain.from_json(spec)
    if isinstance(spec, tuple | list) and len(spec) == 2:
        return InputDomain(_bound_tensor(spec[0], "low"), _bound_tensor(spec[1], "high"))
    raise ConfigError(
        f"an input domain is None (unbounded), 'unit', (low, high) or an InputDomain; got {spec!r}"
    )


_CURRENT: ContextVar[InputDomain] = ContextVar("lsakit_input_domain", default=UNIT)


def current_domain() -> InputDomain:
    """The domain in force: the innermost :func:`input_domain` declaration, else [0, 1].

    Returns:
        The declared domain, or :data:`UNIT` when none is declared.
    """
    return _CURRENT.get()


@contextlib.contextmanager
def input_domain(spec: object) -> Iterator[InputDomain]:
    """Declare the input domain for everything run inside the block (see the module docstring).

    ``spec`` is anything :func:`as_domain` takes; ``None`` means unbounded. Blocks nest; the
    previous declaration is restored on exit, error or not.

    Args:
        spec: the domain: an :class:`InputDomain`, None or ``"unbounded"``, ``"unit"``,
            ``"LOW,HIGH"`` text, a ``(low, high)`` pair or the JSON form (see :func:`as_domain`).

    Yields:
        The :class:`InputDomain` in force inside the block.
    """
    domain = as_domain(spec)
    token = _CURRENT.set(domain)
    try:
        yield domain
    finally:
        _CURRENT.reset(token)


_T = TypeVar("_T")

#: The attribute by which a data source (e.g. a registry DataLoader) carries its domain.
DOMAIN_ATTRIBUTE = "input_domain"


def attach_domain(data: _T, domain: object) -> _T:
    """Let ``data`` (a DataLoader, a dataset …) carry its input domain; returns ``data``.

    Functions that take a data source (:func:`lsakit.analyze`, :func:`lsakit.evaluate.evaluate`,
    the sweeps) declare the domain a source carries for the work they do on it.
    """
    try:
        setattr(data, DOMAIN_ATTRIBUTE, as_domain(domain))
    except AttributeError:
        raise ConfigError(
            f"a {type(data).__name__} cannot carry an input domain; wrap the data in a "
            f"torch DataLoader, or declare the domain with lsakit.input_domain(...)"
        ) from None
    return data


def domain_of(data: object) -> InputDomain | None:
    """The domain ``data`` carries (see :func:`attach_domain`), or None."""
    value = getattr(data, DOMAIN_ATTRIBUTE, None)
    return value if isinstance(value, InputDomain) else None


@contextlib.contextmanager
def declared_by(data: object) -> Iterator[InputDomain]:
    """Declare the domain ``data`` carries for the block; without one, keep the one in force."""
    carried = domain_of(data)
    if carried is None:
        yield current_domain()
        return
    with input_domain(carried) as domain:
        yield domain


_P = ParamSpec("_P")
_R = TypeVar("_R")


def follows_data_domain(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Decorator: run ``fn`` under the domain its ``data`` argument carries (if it carries one)."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        bound = signature.bind_partial(*args, **kwargs)
        with declared_by(bound.arguments.get("data")):
            return fn(*args, **kwargs)

    return wrapper


def check_finite_width(domain: InputDomain, what: str) -> None:
    """Refuse an operation that needs finite bounds (salt/pepper values, the whole-box ε)."""
    if not domain.bounded:
        raise ConfigError(
            f"{what} needs a bounded input domain (it writes or reaches the box's faces), but the "
            f"declared domain is {domain.describe()}; use another perturbation or declare bounds"
        )
