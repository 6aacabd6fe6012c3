"""The two inner maximizations the objectives need beyond :mod:`lsakit.perturb`: fast AT's FGSM
from a random start and TRADES' KL ascent, both on the :class:`~lsakit.perturb.Attack` base.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lsakit._checks import check_nonnegative
from lsakit._outputs import OutputSelector
from lsakit.perturb import PGD, Attack, project_linf
from lsakit.perturb.base import SeededGenerators, clamp_domain, require_labels
from lsakit.train.objective_base import (
    DEFAULT_ALPHA,
    DEFAULT_STEPS,
    FAST_STEP_FACTOR,
    TRADES_START_STD,
)


class RandomStartFGSM(Attack):
    """FGSM from a uniform random start: the inner step of fast AT (Wong et al. 2020, Alg. 3).

    δ ~ U[−ε, ε]ᵈ, x₀ = clip(x + δ, 0, 1), x̂ = Π_{B∞(x, ε) ∩ [0,1]ᵈ}(x₀ + α·sign(∇ₓ CE(f(x₀), y))).
    Wong et al. run it in train mode; here, as for every lsakit attack, the model is in eval mode
    (so BatchNorm statistics are not updated by the attack's forward).

    Args:
        model: the classifier.
        eps: ε ≥ 0 (L∞ radius, input units).
        alpha: step size; ``None`` → 1.25·ε.
        seed: seed of a dedicated generator for δ (``None``: torch's global generator).
        output: where the logits are in the model's output.
    """

    name: ClassVar[str] = "fast_fgsm"

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        alpha: float | None = None,
        seed: int | None = None,
        output: OutputSelector = None,
    ) -> None:
        super().__init__(model, eps=eps, output=output)
        self.alpha = (
            FAST_STEP_FACTOR * self.eps if alpha is None else check_nonnegative(alpha, "alpha")
        )
        self._random = SeededGenerators(seed)

    def perturb(self, x: Tensor, y: Tensor | None) -> Tensor:
        y = require_labels(y)
        if self.eps == 0:
            return x.clone()
        start = clamp_domain(x + (2 * self._random.uniform(x) - 1) * self.eps)
        grad, _, _ = self._loss_gradient(start, y)
        return project_linf(start + self.alpha * grad.sign(), x, self.eps)

    def params(self) -> dict[str, Any]:
        return {**self._base_params(), "alpha": self.alpha, "seed": self._random.seed}


def _kl_per_sample(clean_log_probs: Tensor, logits: Tensor) -> Tensor:
    """KL(p ‖ q) per sample with p = exp(clean_log_probs), q = softmax(logits); log-space, stable."""
    return (clean_log_probs.exp() * (clean_log_probs - F.log_softmax(logits, dim=1))).sum(dim=1)


class TradesAttack(PGD):
    """TRADES' inner maximization (Zhang et al. 2019, Alg. 1; official ``trades.py``).

    x̂₀ = Π(x + 0.001·N(0, I)), then ``steps`` times x̂ ← Π(x̂ + α·sign(∇ KL(p(x) ‖ p(x̂)))), Π the
    projection onto B∞(x, ε) ∩ [0, 1]ᵈ: :class:`~lsakit.perturb.PGD`'s L∞ loop with TRADES' start
    and the KL as its loss. The labels are not used by the KL (only validated). p(x) is
    computed once per call (eval mode is deterministic), where the official code recomputes it at
    every step; the result is identical. The start is projected too (the official code lets the
    first forward see x + noise slightly outside [0, 1]).
    """

    name: ClassVar[str] = "trades_kl"

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        alpha: float = DEFAULT_ALPHA,
        steps: int = DEFAULT_STEPS,
        seed: int | None = None,
        output: OutputSelector = None,
    ) -> None:
        # TRADES has no step rule: α=None is an error here, not PGD's 2.5·ε/steps.
        alpha = check_nonnegative(alpha, "alpha")
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, seed=seed, output=output)

    def _single_run(self, x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            clean_log_probs = F.log_softmax(self._logits(x), dim=1)

        def kl(logits: Tensor, _: Tensor) -> Tensor:
            return _kl_per_sample(clean_log_probs, logits)

        return self._ascend(self._random_start(x), x, y, loss_fn=kl)

    def _random_start(self, x: Tensor) -> Tensor:
        """TRADES' start: x + 0.001·N(0, I), projected."""
        return project_linf(x + TRADES_START_STD * self._random.normal(x), x, self.eps)

    def params(self) -> dict[str, Any]:
        return {
            **self._base_params(),
            "alpha": self.alpha,
            "steps": self.steps,
            "seed": self._random.seed,
        }


__all__ = ["RandomStartFGSM", "TradesAttack"]
