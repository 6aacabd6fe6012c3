"""PGD: projected gradient descent on the cross-entropy (Madry et al., ICLR 2018, Eq. 2 and Sec. 3).

From a random start in the ε-ball, repeat ``steps`` times

    L∞:  x ← Π_{B∞(x₀, ε) ∩ [0,1]ᵈ}( x + α·sign(∇ₓJ) )
    L2:  x ← Π_{B₂(x₀, ε) ∩ [0,1]ᵈ}( x + α·∇ₓJ / ‖∇ₓJ‖₂ )

With several restarts the result is the per-sample worst case: for each sample the restart whose
point is misclassified, else the one with the highest loss (ties to the earliest restart). LSA
(Khalooei et al., 2022, Sec. 3) uses PGD as its strong attack and for AT-PGD training (Sec. 4).

Example::

    >>> attack = PGD(model, eps=0.3, steps=40, seed=0)     # L∞, α = 2.5·ε/steps
    >>> x_adv = attack(x, y)          # x: (N, …) in [0, 1], y: (N,) int; x_adv like x
    >>> attack_l2 = PGDL2(model, eps=1.0, steps=20)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from lsakit._checks import check_nonnegative
from lsakit._outputs import OutputSelector
from lsakit.errors import ConfigError, InputError
from lsakit.perturb.base import (
    Attack,
    LossFn,
    SeededGenerators,
    clamp_domain,
    cross_entropy_per_sample,
    normalize_l2,
    per_sample_view,
    project_l2,
    project_linf,
    require_labels,
)
from lsakit.validate import positive_int

Norm = Literal["linf", "l2"]
_NORMS: tuple[Norm, ...] = ("linf", "l2")

#: Madry et al.'s step rule: α = 2.5·ε/steps lets a walk of `steps` steps cross the ball and back.
MADRY_STEP_FACTOR = 2.5


class PGD(Attack):
    """Projected gradient descent with random restarts, L∞ or L2 (Madry et al., 2018).

    Args:
        model: the classifier (device and eval mode handled by the attack).
        eps: ε ≥ 0, the radius of the ball in input units.
        alpha: step size α; ``None`` → 2.5·ε/steps (Madry et al.'s rule).
        steps: number of gradient steps (≥ 1).
        random_start: start uniformly in the ε-ball (L∞: per element in [−ε, ε]; L2: Gaussian
            direction with radius ε·u^{1/d}, u ~ U[0, 1], d = elements per sample); else from x.
        restarts: independent runs (≥ 1); the per-sample worst case is returned.
        norm: ``"linf"`` or ``"l2"``.
        seed: seed of a dedicated generator for the random starts (``None``: torch's global one).
        output: where the logits are in the model's output (see :class:`~.base.Attack`).
    """

    name: ClassVar[str] = "pgd"

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        alpha: float | None = None,
        steps: int = 10,
        random_start: bool = True,
        restarts: int = 1,
        norm: Norm = "linf",
        seed: int | None = None,
        output: OutputSelector = None,
    ) -> None:
        super().__init__(model, eps=eps, output=output)
        if norm not in _NORMS:
            raise ConfigError(f"PGD norm must be one of {list(_NORMS)}, got {norm!r}")
        self.norm: Norm = norm
        self.steps = positive_int(steps, "steps")
        self.alpha = self._default_alpha() if alpha is None else check_nonnegative(alpha, "alpha")
        if not isinstance(random_start, bool):
            raise InputError(f"random_start must be true or false, got {random_start!r}")
        self.random_start = random_start
        self.restarts = positive_int(restarts, "restarts")
        self._random = SeededGenerators(seed)

    def perturb(self, x: Tensor, y: Tensor | None) -> Tensor:
        """Run ``restarts`` projected-gradient ascents and keep each sample's worst case.

        Args:
            x: the clean batch ``(N, …)`` in the input domain, on the model's device.
            y: the true labels ``(N,)`` (``None`` raises :class:`~lsakit.errors.InputError`).

        Returns:
            The adversarial examples, shaped like ``x``, within the ε-ball and the input domain:
            per sample, a restart's point that is misclassified if there is one, else the one
            with the highest :meth:`loss` (the highest loss also decides between misclassified
            points; ties go to the earliest restart).
        """
        y = require_labels(y)
        best = self._single_run(x, y)
        if self.restarts == 1:
            return best
        best_fooled, best_loss = self._fooled_and_loss(best, y)
        for _ in range(self.restarts - 1):
            candidate = self._single_run(x, y)
            fooled, loss = self._fooled_and_loss(candidate, y)
            # Misclassified beats correct; between equals, the higher loss wins.
            better = (fooled & ~best_fooled) | ((fooled == best_fooled) & (loss > best_loss))
            best = torch.where(per_sample_view(better, x), candidate, best)
            best_fooled = best_fooled | fooled
            best_loss = torch.where(better, loss, best_loss)
        return best

    def _default_alpha(self) -> float:
        """α when none is given: Madry et al.'s 2.5·ε/steps (subclasses use their paper's rule)."""
        return MADRY_STEP_FACTOR * self.eps / self.steps

    def _single_run(self, x: Tensor, y: Tensor) -> Tensor:
        x_adv = self._random_start(x) if self.random_start else x.clone()
        return self._ascend(x_adv, x, y)

    def _ascend(
        self,
        x_adv: Tensor,
        x: Tensor,
        y: Tensor,
        *,
        loss_fn: LossFn | None = None,
        direction: Callable[[Tensor], Tensor] | None = None,
    ) -> Tensor:
        """The projected-gradient loop, from the start ``x_adv``, ``steps`` times

            L∞:  x_adv ← Π_{B∞(x, ε) ∩ D}( x_adv + α·sign(d) )
            L2:  x_adv ← Π_{B₂(x, ε) ∩ D}( x_adv + α·d / ‖d‖₂ )

        with d = ``direction(∇ₓ Σᵢ loss_fn(f(x_adv)ᵢ, yᵢ))``, D the declared input domain. The
        hooks default to :meth:`loss` and the gradient itself (PGD); MI-FGSM passes its momentum
        accumulator, TRADES' attack its KL to the clean prediction.
        """
        loss = self.loss if loss_fn is None else loss_fn
        for _ in range(self.steps):
            grad, _, _ = self._loss_gradient(x_adv, y, loss)
            d = grad if direction is None else direction(grad)
            if self.norm == "linf":
                x_adv = project_linf(x_adv + self.alpha * d.sign(), x, self.eps)
            else:
                x_adv = project_l2(x_adv + self.alpha * normalize_l2(d), x, self.eps)
        return x_adv

    def _random_start(self, x: Tensor) -> Tensor:
        if self.norm == "linf":
            delta = (2 * self._random.uniform(x) - 1) * self.eps
        else:
            # Uniform in the L2 ball: isotropic direction, radius ε·u^{1/d} (volume ∝ rᵈ).
            direction = normalize_l2(self._random.normal(x))
            u = self._random.uniform(x, shape=(x.shape[0],))
            radius = self.eps * u.pow(1.0 / x[0].numel())
            delta = direction * per_sample_view(radius, x)
        return clamp_domain(x + delta)

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        """The per-sample loss PGD ascends and ranks restarts by: cross-entropy
        (subclasses swap it).

        Args:
            logits: the model's logits, ``(N, C)``.
            y: the true labels, ``(N,)``.

        Returns:
            The per-sample cross-entropy, ``(N,)``.
        """
        return cross_entropy_per_sample(logits, y)

    def _fooled_and_loss(self, x_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            logits = self._logits(x_adv)
        return logits.argmax(dim=1) != y, self.loss(logits, y)

    def params(self) -> dict[str, Any]:
        """The settings as JSON-able values, for reports and result files.

        Returns:
            ``eps`` (and ``output`` when given), ``alpha``, ``steps``, ``random_start``,
            ``restarts``, ``norm`` and ``seed``.
        """
        return {
            **self._base_params(),
            "alpha": self.alpha,
            "steps": self.steps,
            "random_start": self.random_start,
            "restarts": self.restarts,
            "norm": self.norm,
            "seed": self._random.seed,
        }


class PGDL2(PGD):
    """PGD in the L2 norm: :class:`PGD` with ``norm="l2"`` (registry name ``pgd_l2``).

    Args:
        model: the classifier (device and eval mode handled by the attack).
        eps: ε ≥ 0, the L2 radius of each sample's ball in input units.
        alpha: step size α (the L2 length of each step); ``None`` → 2.5·ε/steps (Madry et al.'s
            rule).
        steps: number of gradient steps (≥ 1).
        random_start: start uniformly in the L2 ε-ball (Gaussian direction with radius
            ε·u^{1/d}, u ~ U[0, 1], d = elements per sample); else from x.
        restarts: independent runs (≥ 1); the per-sample worst case is returned.
        seed: seed of a dedicated generator for the random starts (``None``: torch's global one).
        output: where the logits are in the model's output (see :class:`~.base.Attack`).
    """

    name: ClassVar[str] = "pgd_l2"

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        alpha: float | None = None,
        steps: int = 10,
        random_start: bool = True,
        restarts: int = 1,
        seed: int | None = None,
        output: OutputSelector = None,
    ) -> None:
        super().__init__(
            model,
            eps=eps,
            alpha=alpha,
            steps=steps,
            random_start=random_start,
            restarts=restarts,
            norm="l2",
            seed=seed,
            output=output,
        )
