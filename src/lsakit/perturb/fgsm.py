"""FGSM: the fast gradient sign method (Goodfellow, Shlens & Szegedy, ICLR 2015, Eq. 3).

One signed gradient step on the cross-entropy, L∞ distance:

    x̂ = clip(x + ε·sign(∇ₓ J(θ, x, y)), 0, 1)

LSA (Khalooei et al., 2022, Sec. 3) uses it as the weaker of its two attacks, and the paper's
robustness tables are FGSM accuracy over an ε sweep (Sec. 6). For sweeps, :meth:`FGSM.direction`
computes sign(∇ₓJ) once per batch and :meth:`FGSM.step` applies it for each ε.

Example::

    >>> attack = FGSM(model, eps=0.1)
    >>> x_adv = attack(x, y)        # x: (N, …) in [0, 1], y: (N,) int; x_adv like x
    >>> d = attack.direction(x, y)  # one gradient, reused for every ε:
    >>> curve = [FGSM.step(x, d, e) for e in (0.0, 0.1, 0.2)]
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from lsakit._checks import check_inputs, check_nonnegative
from lsakit.perturb.base import Attack, clamp_domain, require_labels


class FGSM(Attack):
    """Fast gradient sign method, L∞ (Goodfellow et al., 2015).

    Args:
        model: the classifier (device and eval mode handled by the attack).
        eps: ε ≥ 0, the L∞ radius in input units; ε = 0 returns a copy of x.
        output: where the logits are in the model's output (see :class:`~.base.Attack`).
    """

    name: ClassVar[str] = "fgsm"

    def perturb(self, x: Tensor, y: Tensor | None) -> Tensor:
        """One signed-gradient step of size ε from ``x``, clipped to the input domain.

        Args:
            x: the clean batch ``(N, …)`` in the input domain, on the model's device.
            y: the true labels ``(N,)`` (``None`` raises :class:`~lsakit.errors.InputError`).

        Returns:
            clip(x + ε·sign(∇ₓJ(θ, x, y))), shaped like ``x``; a copy of ``x`` when ε = 0.
        """
        y = require_labels(y)
        if self.eps == 0:
            return x.clone()
        grad, _, _ = self._loss_gradient(x, y)
        return self.step(x, grad.sign(), self.eps)

    def direction(self, x: Tensor, y: Tensor) -> Tensor:
        """sign(∇ₓ J(θ, x, y)) for a batch, on the model's device, same shape and dtype as x.

        Validates like ``__call__`` and runs in eval mode; reuse the result across an ε sweep.

        Args:
            x: the clean batch ``(N, …)`` in the input domain (moved to the model's device).
            y: the true labels ``(N,)``.

        Returns:
            The sign of the input gradient of the cross-entropy, values in {−1, 0, 1}, shaped
            like ``x`` and on the model's device.
        """
        check_inputs(x.detach(), "x")
        with self._attack_context(x, y) as (x_dev, y_dev):
            grad, _, _ = self._loss_gradient(x_dev, y_dev)
        return grad.sign()

    @staticmethod
    def step(x: Tensor, direction: Tensor, eps: float) -> Tensor:
        """The FGSM point clip(x + ε·direction, 0, 1) for a direction from :meth:`direction`.

        Args:
            x: the clean batch ``(N, …)`` in the input domain.
            direction: the step direction shaped like ``x``, e.g. from :meth:`direction`; it is
                moved to ``x``'s device.
            eps: ε ≥ 0, the step size in input units (checked).

        Returns:
            x + ε·direction clipped to the declared input domain, shaped like ``x`` and on its
            device.
        """
        eps = check_nonnegative(eps, "eps")
        return clamp_domain(x + eps * direction.to(x.device))

    def params(self) -> dict[str, Any]:
        """The settings as JSON-able values, for reports and result files.

        Returns:
            ``eps``, and ``output`` when one was given.
        """
        return self._base_params()
