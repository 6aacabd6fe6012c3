"""MI-FGSM: momentum iterative FGSM, L∞ (Dong et al., CVPR 2018, "Boosting adversarial attacks
with momentum", Algorithm 1).

From g₀ = 0 and x₀* = x, repeat T = ``steps`` times

    g_{t+1}    = μ·g_t + ∇ₓJ(x_t*, y) / ‖∇ₓJ(x_t*, y)‖₁          (Eq. 6, per sample)
    x_{t+1}*   = Π_{B∞(x, ε) ∩ [0,1]ᵈ}( x_t* + α·sign(g_{t+1}) )   (Eq. 7)

with α = ε/T by default, so that T steps just reach the ball's surface (the paper's choice). The
L1 normalisation makes every step's gradient count equally in the accumulated direction, whatever
its scale; μ = 0 recovers I-FGSM (BIM) and, with T = 1 and α = ε, FGSM.

Example::

    >>> attack = MIFGSM(model, eps=8 / 255, steps=10, decay=1.0)
    >>> x_adv = attack(x, y)        # x: (N, …) in [0, 1], y: (N,) int; x_adv like x
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lsakit._checks import check_nonnegative
from lsakit._outputs import OutputSelector
from lsakit.perturb.base import _TINY, per_sample_view
from lsakit.perturb.pgd import PGD


def normalize_l1(g: Tensor) -> Tensor:
    """Per-sample g/‖g‖₁ (Dong et al., 2018, Eq. 6); a zero gradient stays zero (no NaN)."""
    norms = torch.linalg.vector_norm(g.flatten(1), ord=1, dim=1)
    return g / per_sample_view(norms.clamp_min(_TINY), g)


class MIFGSM(PGD):
    """Momentum iterative FGSM, L∞ (Dong et al., 2018, Algorithm 1); starts from x itself.

    The loop is :class:`~lsakit.perturb.pgd.PGD`'s L∞ loop without a random start or restarts,
    stepping along the sign of the accumulated momentum g instead of the gradient's.

    Args:
        model: the classifier (device and eval mode handled by the attack).
        eps: ε ≥ 0, the L∞ radius in input units.
        alpha: step size α; ``None`` → ε/steps (the paper's α = ε/T).
        steps: number of iterations T (≥ 1).
        decay: momentum decay factor μ ≥ 0 (the paper uses 1.0).
        output: where the logits are in the model's output (see :class:`~.base.Attack`).
    """

    name: ClassVar[str] = "mifgsm"

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        alpha: float | None = None,
        steps: int = 10,
        decay: float = 1.0,
        output: OutputSelector = None,
    ) -> None:
        super().__init__(
            model, eps=eps, alpha=alpha, steps=steps, random_start=False, output=output
        )
        self.decay = check_nonnegative(decay, "decay")

    def _default_alpha(self) -> float:
        """The paper's α = ε/T: T steps just reach the ball's surface."""
        return self.eps / self.steps

    def _single_run(self, x: Tensor, y: Tensor) -> Tensor:
        momentum = torch.zeros_like(x)

        def accumulate(grad: Tensor) -> Tensor:  # Eq. 6: g ← μ·g + ∇/‖∇‖₁
            nonlocal momentum
            momentum = self.decay * momentum + normalize_l1(grad)
            return momentum

        return self._ascend(x.clone(), x, y, direction=accumulate)

    def params(self) -> dict[str, Any]:
        """The settings as JSON-able values, for reports and result files.

        Returns:
            ``eps`` (and ``output`` when given), ``alpha``, ``steps`` and ``decay``.
        """
        return {
            **self._base_params(),
            "alpha": self.alpha,
            "steps": self.steps,
            "decay": self.decay,
        }
