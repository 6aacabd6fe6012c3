"""Statistical noise: the non-adversarial perturbations of LSA.

Khalooei et al. (2022, arXiv:2202.02626, Sec. 3, Fig. 3) compare each layer's relative error under
Gaussian, salt, pepper and speckle noise with FGSM and PGD of the same size. Each noise here follows
the per-element semantics of ``skimage.util.random_noise`` (mode ``gaussian``, ``salt``,
``pepper``, ``s&p``, ``speckle``): every element (pixel × channel) is drawn independently, and the
result is clipped to the declared input domain (:mod:`lsakit.domain`; [0, 1] by default, no
clipping for unbounded inputs). Salt writes the domain's high bound and pepper its low bound (1 and
0 in [0, 1]); they need a bounded domain, unless ``value`` names what they write (e.g.
``pepper=0.3,value=0`` for MNIST pixels under the unbounded domain of the paper protocol). The
labels ``y`` are ignored.

With ``seed`` set, draws come from a :class:`torch.Generator` on the input's device that is created
on the first call and re-used, so a fresh object with the same seed reproduces the same sequence.

Example::

    >>> noise = GaussianNoise(std=0.1, seed=0)
    >>> x_noisy = noise(x)          # x: (N, C, H, W) in [0, 1]
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from lsakit._checks import check_nonnegative, check_probability
from lsakit.domain import check_finite_width, current_domain
from lsakit.errors import ConfigError
from lsakit.perturb.base import Perturbation, SeededGenerators, clamp_domain


def _fill(x: Tensor, mask: Tensor, value: Tensor, scalar: bool) -> Tensor:
    """``x`` with the masked elements replaced by ``value`` (a bound broadcast to x's shape)."""
    if scalar:  # the common case: one bound, the same bits as masked_fill with a number
        return x.masked_fill(mask, float(value.flatten()[0]))
    return torch.where(mask, value, x)


class _Noise(Perturbation):
    """Shared plumbing: not adversarial, seeded draws on the input's device."""

    is_adversarial: ClassVar[bool] = False

    def __init__(self, *, seed: int | None = None) -> None:
        self._random = SeededGenerators(seed)

    @property
    def seed(self) -> int | None:
        return self._random.seed


class GaussianNoise(_Noise):
    """Additive Gaussian noise x̂ = clip(x + σ·n, 0, 1), n ~ N(0, 1) per element.

    skimage ``random_noise(mode="gaussian", var=σ²)``. Shapes: (N, …) → (N, …).

    Args:
        std: σ ≥ 0, in input units; σ = 0 returns x.
        seed: seed of a dedicated generator (``None``: torch's global generator).
    """

    name: ClassVar[str] = "gaussian"

    def __init__(self, *, std: float, seed: int | None = None) -> None:
        super().__init__(seed=seed)
        self.std = check_nonnegative(std, "std")

    def perturb(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Add σ·n, n ~ N(0, 1) per element, and clip to the input domain.

        Args:
            x: the batch ``(N, …)`` in the input domain.
            y: ignored (noise needs no labels).

        Returns:
            The noisy batch, same shape, dtype and device as ``x``.
        """
        return clamp_domain(x + self.std * self._random.normal(x))

    def params(self) -> dict[str, Any]:
        """The settings as JSON-able values, for reports and result files.

        Returns:
            ``{"std": σ, "seed": seed}``.
        """
        return {"std": self.std, "seed": self.seed}


class SpeckleNoise(_Noise):
    """Multiplicative noise x̂ = clip(x + x·σ·n, 0, 1), n ~ N(0, 1) per element.

    skimage ``random_noise(mode="speckle", var=σ²)``; zero elements stay zero.

    Args:
        std: σ ≥ 0 (relative to each element's value); σ = 0 returns x.
        seed: seed of a dedicated generator (``None``: torch's global generator).
    """

    name: ClassVar[str] = "speckle"

    def __init__(self, *, std: float, seed: int | None = None) -> None:
        super().__init__(seed=seed)
        self.std = check_nonnegative(std, "std")

    def perturb(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Add x·σ·n, n ~ N(0, 1) per element, and clip to the input domain.

        Args:
            x: the batch ``(N, …)`` in the input domain.
            y: ignored (noise needs no labels).

        Returns:
            The noisy batch, same shape, dtype and device as ``x``.
        """
        return clamp_domain(x + x * self.std * self._random.normal(x))

    def params(self) -> dict[str, Any]:
        """The settings as JSON-able values, for reports and result files.

        Returns:
            ``{"std": σ, "seed": seed}``.
        """
        return {"std": self.std, "seed": self.seed}


class SaltPepperNoise(_Noise):
    """Impulse noise: each element is replaced with probability ``amount``, by 1 (salt) with
    probability ``salt_vs_pepper`` and by 0 (pepper) otherwise.

    skimage ``random_noise(mode="s&p", amount=…, salt_vs_pepper=…)``: independent Bernoulli draws
    per element, so the replaced fraction is ``amount`` in expectation (binomial spread).

    Args:
        amount: probability in [0, 1] that an element is replaced; 0 returns x.
        salt_vs_pepper: probability in [0, 1] that a replaced element becomes 1 rather than 0.
        seed: seed of a dedicated generator (``None``: torch's global generator).
    """

    name: ClassVar[str] = "salt_pepper"

    def __init__(
        self, *, amount: float, salt_vs_pepper: float = 0.5, seed: int | None = None
    ) -> None:
        super().__init__(seed=seed)
        self.amount = check_probability(amount, "amount")
        self.salt_vs_pepper = check_probability(salt_vs_pepper, "salt_vs_pepper")

    def perturb(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Replace random elements by the domain's high (salt) or low (pepper) bound.

        Needs a bounded input domain (:func:`~lsakit.domain.check_finite_width`).

        Args:
            x: the batch ``(N, …)`` in the input domain.
            y: ignored (noise needs no labels).

        Returns:
            The noisy batch, same shape, dtype and device as ``x``.
        """
        # Two draws per element, as skimage does; U[0, 1) < p is Bernoulli(p), never true for p = 0.
        domain = current_domain()
        check_finite_width(domain, "salt-and-pepper noise")
        replaced = self._random.uniform(x) < self.amount
        salted = self._random.uniform(x) < self.salt_vs_pepper
        out = _fill(x, replaced & salted, domain.high_like(x), domain.scalar)
        return _fill(out, replaced & ~salted, domain.low_like(x), domain.scalar)

    def params(self) -> dict[str, Any]:
        """The settings as JSON-able values, for reports and result files.

        Returns:
            ``{"amount": …, "salt_vs_pepper": …, "seed": …}``.
        """
        return {"amount": self.amount, "salt_vs_pepper": self.salt_vs_pepper, "seed": self.seed}


class _Impulse(_Noise):
    """Each element is set to a value with probability ``amount``: ``value`` when given, else
    the domain's high (salt) or low (pepper) bound."""

    _high: ClassVar[bool]

    def __init__(
        self, *, amount: float, value: float | None = None, seed: int | None = None
    ) -> None:
        super().__init__(seed=seed)
        self.amount = check_probability(amount, "amount")
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value != value
        ):
            raise ConfigError(f"{self.name} noise: value must be a number, got {value!r}")
        self.value = None if value is None else float(value)

    def perturb(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        hits = self._random.uniform(x) < self.amount
        if self.value is not None:
            return torch.where(hits, torch.full_like(x, self.value), x)
        domain = current_domain()
        check_finite_width(domain, f"{self.name} noise (or give value=…)")
        value = domain.high_like(x) if self._high else domain.low_like(x)
        return _fill(x, hits, value, domain.scalar)

    def params(self) -> dict[str, Any]:
        given = {} if self.value is None else {"value": self.value}
        return {"amount": self.amount, **given, "seed": self.seed}


class SaltNoise(_Impulse):
    """Salt noise: each element is set to 1 (the domain's high bound) with probability ``amount``.

    skimage ``random_noise(mode="salt", amount=…)`` (s&p with only salt).

    Args:
        amount: probability in [0, 1] that an element becomes 1; 0 returns x.
        value: what a salted element becomes (default: the domain's high bound).
        seed: seed of a dedicated generator (``None``: torch's global generator).
    """

    name: ClassVar[str] = "salt"
    _high: ClassVar[bool] = True


class PepperNoise(_Impulse):
    """Pepper noise: each element is set to 0 (the domain's low bound) with probability ``amount``.

    skimage ``random_noise(mode="pepper", amount=…)`` (s&p with only pepper).

    Args:
        amount: probability in [0, 1] that an element becomes 0; 0 returns x.
        value: what a peppered element becomes (default: the domain's low bound).
        seed: seed of a dedicated generator (``None``: torch's global generator).
    """

    name: ClassVar[str] = "pepper"
    _high: ClassVar[bool] = False
