"""Perturbations by name, and the CLI spec syntax ``NAME[=STRENGTH][,key=value...]``.

Every perturbation has one main parameter, its *strength* (noise: ``std`` or ``amount``; attacks:
``eps``), so a sweep or a config can say ``gaussian=0.1`` or ``pgd=0.3,steps=40`` uniformly. The
perturbations are those LSA compares (Khalooei et al., 2022, Sec. 3) plus PGD-L2 and APGD.

Example::

    >>> names()[:3]
    ['gaussian', 'salt', 'pepper']
    >>> parse_spec("pgd=0.3,steps=40,alpha=0.01")
    ('pgd', 0.3, {'steps': 40, 'alpha': 0.01})
    >>> attack = from_spec("apgd=8/255,loss=dlr", model)
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from lsakit.errors import ArgumentError, ConfigError, InputError
from lsakit.perturb.apgd import APGD
from lsakit.perturb.apgd_targeted import APGDT
from lsakit.perturb.base import Attack, Perturbation
from lsakit.perturb.cw import CWLinf
from lsakit.perturb.eot import EOTAPGD, EOTPGD
from lsakit.perturb.fab import FABT
from lsakit.perturb.fgsm import FGSM
from lsakit.perturb.mifgsm import MIFGSM
from lsakit.perturb.noise import (
    GaussianNoise,
    PepperNoise,
    SaltNoise,
    SaltPepperNoise,
    SpeckleNoise,
)
from lsakit.perturb.pgd import PGD, PGDL2
from lsakit.perturb.square import Square
from lsakit.registry import Registry


@dataclass(frozen=True)
class _Entry:
    """How to build one registered perturbation."""

    factory: type[Perturbation]
    strength: str  # the keyword that ``strength=`` / ``NAME=STRENGTH`` sets
    preset: Mapping[str, Any] = field(default_factory=dict)  # fixed keywords of a convenience name

    def accepted(self) -> list[str]:
        """Keyword arguments a user may set (constructor keywords minus the preset ones)."""
        signature = inspect.signature(self.factory.__init__)
        return [
            p.name
            for p in signature.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in self.preset
        ]


_REGISTRY: Registry[_Entry] = Registry(
    "perturbation",
    {
        "gaussian": _Entry(GaussianNoise, "std"),
        "salt": _Entry(SaltNoise, "amount"),
        "pepper": _Entry(PepperNoise, "amount"),
        "salt_pepper": _Entry(SaltPepperNoise, "amount"),
        "speckle": _Entry(SpeckleNoise, "std"),
        "fgsm": _Entry(FGSM, "eps"),
        "pgd": _Entry(PGD, "eps"),
        "pgd_l2": _Entry(PGDL2, "eps"),
        "apgd": _Entry(APGD, "eps"),
        "apgd_dlr": _Entry(APGD, "eps", {"loss": "dlr"}),
        "apgd_t": _Entry(APGDT, "eps"),
        "fab_t": _Entry(FABT, "eps"),
        "square": _Entry(Square, "eps"),
        "cw": _Entry(CWLinf, "eps"),
        "mifgsm": _Entry(MIFGSM, "eps"),
        "eot_pgd": _Entry(EOTPGD, "eps"),
        "eot_apgd": _Entry(EOTAPGD, "eps"),
    },
)


def names() -> list[str]:
    """Registered perturbation names: the noises first, then the attacks.

    Returns:
        The names, in registration order (``gaussian``, ``salt``, …, ``fgsm``, ``pgd``, …).
    """
    return _REGISTRY.names()


def _entry(name: str) -> _Entry:
    return _REGISTRY.get(name)


def is_adversarial(name: str) -> bool:
    """Whether ``name`` is an attack (needs a model and labels) rather than statistical noise.

    Args:
        name: a registered perturbation name (an unknown one raises
            :class:`~lsakit.errors.ConfigError`).

    Returns:
        True for an attack, False for noise.
    """
    return _entry(name).factory.is_adversarial


def strength_parameter(name: str) -> str:
    """The keyword that ``strength`` sets for ``name`` (``std``, ``amount`` or ``eps``).

    Args:
        name: a registered perturbation name (an unknown one raises
            :class:`~lsakit.errors.ConfigError`).

    Returns:
        The constructor keyword: ``"std"``, ``"amount"`` or ``"eps"``.
    """
    return _entry(name).strength


def build(
    name: str, *, model: nn.Module | None = None, strength: float | None = None, **params: Any
) -> Perturbation:
    """Build a registered perturbation; ``strength`` sets its main parameter (std / amount / eps).

    ``model`` is required for attacks and ignored for noise, so one call site can build either.
    Every configuration mistake (unknown name or keyword, missing model or strength, invalid value)
    raises :class:`~lsakit.errors.ConfigError` with a one-line fix.

    Args:
        name: a registered perturbation name (see :func:`names`).
        model: the classifier an attack runs on; required for attacks, ignored for noise.
        strength: the value of the main parameter (``std``, ``amount`` or ``eps``, see
            :func:`strength_parameter`); ``None``: it must be given among ``params``.
        params: other constructor keywords of the perturbation (e.g. ``steps=40``); those a
            convenience name fixes (``apgd_dlr``'s ``loss``) are refused.

    Returns:
        The perturbation, ready to be called as ``perturbation(x, y)``.
    """
    entry = _entry(name)
    accepted = entry.accepted()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        fixed = f" ({name} fixes {dict(entry.preset)})" if set(unknown) & set(entry.preset) else ""
        raise ConfigError(
            f"{name} has no parameter {', '.join(map(repr, unknown))}{fixed}; "
            f"accepted: {', '.join(accepted)}"
        )
    if strength is not None:
        if entry.strength in params:
            raise ConfigError(
                f"{name}: strength and {entry.strength}= both given; pass only one of them"
            )
        params[entry.strength] = strength
    if entry.strength not in params:
        raise ConfigError(
            f"{name} needs a strength: write {name}=VALUE or pass {entry.strength}=VALUE"
        )
    kwargs = {**params, **entry.preset}
    try:
        if issubclass(entry.factory, Attack):
            if model is None:
                raise ConfigError(f"{name} is an attack and needs a model: pass model=")
            return entry.factory(model, **kwargs)
        return entry.factory(**kwargs)
    except ArgumentError as err:
        raise ArgumentError(f"{name}: {err.template}") from err
    except InputError as err:
        raise ConfigError(f"{name}: {err}") from err


def _parse_value(text: str) -> int | float | bool | str:
    """``3`` → int, ``0.3`` / ``1e-3`` / ``8/255`` → float, ``true``/``false`` → bool, else str."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    numerator, slash, denominator = text.partition("/")
    if slash:
        try:
            return float(numerator) / float(denominator)
        except (ValueError, ZeroDivisionError):
            pass
    return text


def parse_spec(spec: str) -> tuple[str, float | None, dict[str, Any]]:
    """Parse ``NAME[=STRENGTH][,key=value...]`` into (name, strength, params).

    Values become int, float (``8/255`` allowed), bool (``true``/``false``) or str; whitespace
    around tokens is ignored. E.g. ``"pgd=0.3,steps=40"`` → ``("pgd", 0.3, {"steps": 40})``.

    Args:
        spec: the spec string; a malformed one raises :class:`~lsakit.errors.ConfigError`.

    Returns:
        ``(name, strength, params)``: the name as written (not looked up in the registry), the
        strength as a float (``None`` without ``=STRENGTH``) and the options in the order given.
    """
    example = "e.g. gaussian=0.1 or pgd=0.3,steps=40"
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(
            f"empty perturbation spec {spec!r}; write NAME[=STRENGTH][,key=value], {example}"
        )
    head, *rest = (token.strip() for token in spec.split(","))
    name, has_strength, strength_text = (part.strip() for part in head.partition("="))
    if not name:
        raise ConfigError(f"perturbation spec {spec!r} has no name; {example}")
    strength: float | None = None
    if has_strength:
        value = _parse_value(strength_text)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"strength {strength_text!r} in {spec!r} is not a number; {example}")
        strength = float(value)
    params: dict[str, Any] = {}
    for token in rest:
        key, has_value, text = (part.strip() for part in token.partition("="))
        if not (key and has_value and text):
            raise ConfigError(
                f"malformed option {token!r} in {spec!r}; expected key=value, {example}"
            )
        if key in params:
            raise ConfigError(f"option {key!r} given twice in {spec!r}; keep one")
        params[key] = _parse_value(text)
    return name, strength, params


def from_spec(spec: str, model: nn.Module | None = None) -> Perturbation:
    """Parse a CLI spec and build the perturbation: ``from_spec("pgd=0.3,steps=40", model)``.

    Args:
        spec: ``NAME[=STRENGTH][,key=value...]`` (see :func:`parse_spec`).
        model: the classifier; required for attacks, ignored for noise.

    Returns:
        The perturbation :func:`build` makes from the parsed spec.
    """
    name, strength, params = parse_spec(spec)
    return build(name, model=model, strength=strength, **params)
