"""EOT: expectation over transformation for attacks on randomized models (Athalye, Engstrom, Ilyas
& Kwok, ICML 2018, "Synthesizing robust adversarial examples", Eq. 1; Athalye, Carlini & Wagner,
ICML 2018, "Obfuscated gradients give a false sense of security", Sec. 4.3).

A model with randomness at inference (dropout kept on, noise injection, random input transforms)
gives a different gradient on every pass; one sample of it can point anywhere, which makes such
models look robust without being so. EOT ascends the expected loss instead, estimating

    ∇ₓ E_t[J(f_t(x), y)] = E_t[∇ₓ J(f_t(x), y)] ≈ (1/n)·Σₖ ∇ₓ J(f_{tₖ}(x), y)

with n = ``samples`` forward/backward passes. :class:`EOTGradient` does this once, in
:meth:`~lsakit.perturb.base.Attack._loss_gradient`, so any attack built on that hook gets EOT by
inheritance: :class:`EOTPGD` (the EOT-PGD of Athalye et al.) and :class:`EOTAPGD` (the APGD of
AutoAttack's "rand" version, Croce & Hein, 2020, which uses EOT with 20 samples).

The per-sample losses and the logits the hook returns are averaged the same way, so APGD's
best-point tracking and its misclassification test use the expected loss and expected logits
(the reference ``fra31/auto-attack`` keeps those of the last pass). The model's randomness is its
own: the attack neither seeds it nor switches it on; the attack still runs the model in eval mode,
so randomness tied to ``training`` (``nn.Dropout``) is off unless the model keeps it on itself.

Example::

    >>> attack = EOTPGD(model, eps=8 / 255, steps=20, samples=10, seed=0)
    >>> x_adv = attack(x, y)        # x: (N, …) in [0, 1], y: (N,) int; x_adv like x
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from lsakit._checks import check_inputs
from lsakit._outputs import OutputSelector
from lsakit.perturb.apgd import APGD, Loss
from lsakit.perturb.base import Attack, LossFn, cross_entropy_per_sample
from lsakit.perturb.pgd import PGD, Norm
from lsakit.validate import positive_int


def _running_mean(mean: Tensor, value: Tensor, count: int) -> Tensor:
    """The mean of ``count`` values from the mean of the first ``count − 1`` and the last one.

    m + (v − m)/k rather than Σ/k: for a deterministic model every v equals m, so v − m = 0 and
    the mean stays bit-exactly the single-pass value (EOT then reproduces the plain attack).
    """
    return mean + (value - mean) / count


class EOTGradient(Attack):
    """Mixin: every loss gradient of the attack is the mean over ``samples`` passes (EOT).

    Put it before the attack class, ``class EOTX(EOTGradient, X)``, and set ``self.samples``
    (see :meth:`_set_samples`) in the constructor.
    """

    samples: int

    def _set_samples(self, samples: int) -> None:
        self.samples = positive_int(samples, "samples")

    def _loss_gradient(
        self, x_adv: Tensor, y: Tensor, loss_fn: LossFn = cross_entropy_per_sample
    ) -> tuple[Tensor, Tensor, Tensor]:
        grad, losses, logits = super()._loss_gradient(x_adv, y, loss_fn)
        for count in range(2, self.samples + 1):
            g, loss, z = super()._loss_gradient(x_adv, y, loss_fn)
            grad = _running_mean(grad, g, count)
            losses = _running_mean(losses, loss, count)
            logits = _running_mean(logits, z, count)
        return grad, losses, logits

    def expected_gradient(self, x: Tensor, y: Tensor) -> Tensor:
        """The EOT estimate of ∇ₓ E[J] at x (the attack's own loss), shaped like x.

        Validates like ``__call__`` and runs the model in eval mode on its device; useful to
        inspect how noisy a randomized model's gradients are (gradient-masking checks).
        """
        check_inputs(x.detach(), "x")
        with self._attack_context(x, y) as (x_dev, y_dev):
            grad, _, _ = self._loss_gradient(x_dev, y_dev)
        return grad


class EOTPGD(EOTGradient, PGD):
    """PGD with EOT gradients (Athalye et al., 2018; PGD of Madry et al., 2018), L∞ or L2.

    The arguments are those of :class:`~lsakit.perturb.pgd.PGD`, plus ``samples`` (≥ 1), the
    passes averaged per gradient; ``samples=1`` is plain PGD.

    Args:
        model: the classifier, randomized or not (device and eval mode handled by the attack;
            its randomness is neither seeded nor switched on).
        eps: ε ≥ 0, the radius of the ball in input units.
        alpha: step size α; ``None`` → 2.5·ε/steps (Madry et al.'s rule).
        steps: number of gradient steps (≥ 1).
        samples: forward/backward passes averaged per gradient (≥ 1).
        random_start: start uniformly in the ε-ball (as :class:`~lsakit.perturb.pgd.PGD`); else
            from x.
        restarts: independent runs (≥ 1); the per-sample worst case is returned.
        norm: ``"linf"`` or ``"l2"``.
        seed: seed of a dedicated generator for the random starts (``None``: torch's global one).
        output: where the logits are in the model's output (see :class:`~.base.Attack`).
    """

    name: ClassVar[str] = "eot_pgd"

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        alpha: float | None = None,
        steps: int = 10,
        samples: int = 10,
        random_start: bool = True,
        restarts: int = 1,
        norm: Norm = "linf",
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
            norm=norm,
            seed=seed,
            output=output,
        )
        self._set_samples(samples)

    def params(self) -> dict[str, Any]:
        """The settings as JSON-able values, for reports and result files.

        Returns:
            :meth:`PGD.params <lsakit.perturb.pgd.PGD.params>` plus ``samples``.
        """
        return {**super().params(), "samples": self.samples}


class EOTAPGD(EOTGradient, APGD):
    """APGD with EOT gradients (AutoAttack's "rand" version, Croce & Hein, 2020), L∞.

    The arguments are those of :class:`~lsakit.perturb.apgd.APGD`, plus ``samples`` (≥ 1), the
    passes averaged per gradient (AutoAttack uses 20); ``samples=1`` is plain APGD.

    Args:
        model: the classifier, randomized or not (device and eval mode handled by the attack;
            its randomness is neither seeded nor switched on).
        eps: ε ≥ 0, the L∞ radius in input units.
        steps: iteration budget N_iter per restart (≥ 1).
        samples: forward/backward passes averaged per gradient (≥ 1; AutoAttack uses 20).
        loss: ``"ce"`` (cross-entropy) or ``"dlr"`` (needs ≥ 3 classes).
        restarts: runs from independent random starts on the still-robust samples (≥ 1).
        rho: ρ ∈ [0, 1], the fraction of improving steps below which the step is halved.
        seed: seed of a dedicated generator for the random starts (``None``: torch's global one).
        output: where the logits are in the model's output (see :class:`~.base.Attack`).
    """

    name: ClassVar[str] = "eot_apgd"

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        steps: int = 100,
        samples: int = 20,
        loss: Loss = "ce",
        restarts: int = 1,
        rho: float = 0.75,
        seed: int | None = None,
        output: OutputSelector = None,
    ) -> None:
        super().__init__(
            model,
            eps=eps,
            steps=steps,
            loss=loss,
            restarts=restarts,
            rho=rho,
            seed=seed,
            output=output,
        )
        self._set_samples(samples)

    def params(self) -> dict[str, Any]:
        """The settings as JSON-able values, for reports and result files.

        Returns:
            :meth:`APGD.params <lsakit.perturb.apgd.APGD.params>` plus ``samples``.
        """
        return {**super().params(), "samples": self.samples}
