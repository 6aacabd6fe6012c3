"""APGD: auto-PGD, L∞ (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness
with an ensemble of diverse parameter-free attacks", Algorithm 1).

PGD with momentum and a step size that adapts per sample without tuning. Starting from η = 2ε,

    z  = Π(x⁽ᵏ⁾ + η·sign(∇f(x⁽ᵏ⁾)))
    x⁽ᵏ⁺¹⁾ = Π(x⁽ᵏ⁾ + α·(z − x⁽ᵏ⁾) + (1 − α)·(x⁽ᵏ⁾ − x⁽ᵏ⁻¹⁾)),   α = 0.75 (1 at the first step)

where Π projects onto B∞(x₀, ε) ∩ [0, 1]ᵈ. At the checkpoints wⱼ ≈ pⱼ·N_iter with p₀ = 0,
p₁ = 0.22, pⱼ₊₁ = pⱼ + max(pⱼ − pⱼ₋₁ − 0.03, 0.06), a sample's step is halved and its iterate
restarted from its best point if (1) the loss rose in at most ρ·(wⱼ − wⱼ₋₁) of the steps since the
last checkpoint, or (2) its step was not halved at the last checkpoint and its best loss has not
improved since. The loss is cross-entropy or the difference of logits ratio (Sec. 3.2)

    DLR(x, y) = −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e−12),   z sorted as z_π1 ≥ z_π2 ≥ …

This follows the authors' reference implementation (``fra31/auto-attack``,
``autoattack/autopgd_base.py``: ``APGDAttack.attack_single_run`` and ``perturb``) for the L∞ norm:
the same random start (x + ε·t/‖t‖∞, t ~ U[−1, 1]ᵈ), checkpoint lengths
(⌊0.22·N⌋, shrinking by ⌊0.03·N⌋ down to ⌊0.06·N⌋, each at least 1), "≤" in condition (1), and
restarts that attack only the samples not yet misclassified. Deviations, all deliberate:

* condition (1) counts increases against the loss at the starting point for the first step, as
  in the paper; the reference compares it with an unfilled (zero) slot of its loss buffer;
* samples that no restart misclassifies get their highest-loss point over all restarts (the
  reference returns the clean input for them); samples misclassified on the clean input are
  returned unchanged, as in the reference;
* with ``seed`` set the attack draws from its own generator, created once and re-used (the
  reference re-seeds torch's global generator at every call); EOT is not implemented (the
  targeted DLR variant is :class:`~lsakit.perturb.apgd_targeted.APGDT`).

Example::

    >>> attack = APGD(model, eps=8 / 255, steps=100, loss="dlr", seed=0)
    >>> x_adv = attack(x, y)        # x: (N, …) in [0, 1], y: (N,) int; x_adv like x
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from lsakit._checks import check_probability
from lsakit._outputs import OutputSelector
from lsakit.errors import ConfigError
from lsakit.perturb.base import (
    Attack,
    LossFn,
    SeededGenerators,
    clamp_domain,
    cross_entropy_per_sample,
    per_sample_view,
    project_linf,
    require_labels,
)
from lsakit.validate import positive_int

Loss = Literal["ce", "dlr"]

#: Momentum weight α of the update (Croce & Hein, 2020, Eq. 2 / reference ``a = 0.75``).
MOMENTUM = 0.75
#: Initial step size η⁽⁰⁾ = 2ε.
INITIAL_STEP_FACTOR = 2.0
#: Checkpoint schedule as fractions of the iteration budget: first interval, decrement, minimum.
FIRST_INTERVAL, INTERVAL_DECREMENT, MIN_INTERVAL = 0.22, 0.03, 0.06


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of logits ratio per sample (Croce & Hein, 2020, Eq. 6); needs ≥ 3 classes.

    −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e−12): shift- and scale-invariant in the logits.

    Args:
        logits: the model's logits, ``(N, C)`` with C ≥ 3.
        y: the true labels, ``(N,)`` in [0, C).

    Returns:
        The DLR loss of each sample, ``(N,)``: positive when another class outscores ``y``.
    """
    z_sorted, order = logits.sort(dim=1)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    y_is_top = order[:, -1] == y
    best_other = torch.where(y_is_top, z_sorted[:, -2], z_sorted[:, -1])
    return -(z_y - best_other) / (z_sorted[:, -1] - z_sorted[:, -3] + 1e-12)


_LOSSES: dict[str, LossFn] = {"ce": cross_entropy_per_sample, "dlr": dlr_loss}


@dataclass(frozen=True)
class _RunResult:
    """One APGD run on a sub-batch: the best-loss point and the last misclassified point."""

    best: Tensor  # (n, …) highest-loss iterate (reference: x_best)
    best_loss: Tensor  # (n,)
    adversarial: Tensor  # (n, …) last misclassified iterate (reference: x_best_adv)
    fooled: Tensor  # (n,) bool: some iterate was misclassified
    step: Tensor  # (n,) final step sizes η (diagnostics: how often each sample's step was halved)


@dataclass
class WorstCase:
    """The per-sample worst case over APGD runs, updated in place as runs finish.

    Samples misclassified on the clean input keep ``x``; later runs attack only the samples no
    run has misclassified yet (as the reference's restarts do). A misclassified point wins
    outright; otherwise the point with the highest loss over all runs is kept.
    """

    result: Tensor  # (N, …) the points returned
    best_loss: Tensor  # (N,) loss of result's point (−∞ until a run reports one)
    fooled: Tensor  # (N,) bool: clean mistake, or some run found a misclassified point

    @classmethod
    def start(cls, x: Tensor, clean_fooled: Tensor) -> WorstCase:
        best_loss = torch.full(clean_fooled.shape, -torch.inf, dtype=x.dtype, device=x.device)
        return cls(result=x.clone(), best_loss=best_loss, fooled=clean_fooled.clone())

    def robust(self) -> Tensor:
        """Indices (k,) of the samples not misclassified so far: the next run's targets."""
        return (~self.fooled).nonzero().squeeze(1)

    def update(self, robust: Tensor, run: _RunResult) -> None:
        """Merge a run on the samples ``robust`` into the worst case."""
        higher = ~run.fooled & (run.best_loss > self.best_loss[robust])
        keep = torch.where(per_sample_view(run.fooled, run.best), run.adversarial, run.best)
        take = run.fooled | higher
        self.result[robust[take]] = keep[take]
        self.best_loss[robust[higher]] = run.best_loss[higher]
        self.fooled[robust[run.fooled]] = True


def checkpoint_intervals(steps: int) -> tuple[int, int, int]:
    """(first interval, decrement, minimum interval) in iterations, as in the reference."""
    return (
        max(int(FIRST_INTERVAL * steps), 1),
        max(int(INTERVAL_DECREMENT * steps), 1),
        max(int(MIN_INTERVAL * steps), 1),
    )


def halve_step(
    losses: Tensor, rho: float, halved_last: Tensor, best_loss_last: Tensor, best_loss: Tensor
) -> Tensor:
    """Which samples halve their step at a checkpoint (Croce & Hein, 2020, Sec. 3.1).

    Args:
        losses: (k + 1, n) losses from the previous checkpoint's iterate to the current one.
        rho: ρ of condition (1).
        halved_last: (n,) bool, whether the step was halved at the previous checkpoint.
        best_loss_last, best_loss: (n,) best loss at the previous checkpoint and now.

    Returns (n,) bool: condition (1) — the loss rose in at most ρ·k of the k steps ("≤" as in the
    reference) — or condition (2) — not halved last time and the best loss did not improve.
    """
    k = losses.shape[0] - 1
    increases = (losses[1:] > losses[:-1]).sum(dim=0)
    oscillating = increases <= k * rho
    stalled = ~halved_last & (best_loss_last >= best_loss)
    return oscillating | stalled


class APGD(Attack):
    """Auto-PGD, L∞, with CE or DLR loss (Croce & Hein, 2020, Algorithm 1).

    Args:
        model: the classifier (device and eval mode handled by the attack).
        eps: ε ≥ 0, the L∞ radius in input units.
        steps: iteration budget N_iter per restart (≥ 1).
        loss: ``"ce"`` (cross-entropy) or ``"dlr"`` (needs ≥ 3 classes).
        restarts: runs from independent random starts on the still-robust samples (≥ 1).
        rho: ρ ∈ [0, 1], the fraction of improving steps below which the step is halved.
        seed: seed of a dedicated generator for the random starts (``None``: torch's global one).
        output: where the logits are in the model's output (see :class:`~.base.Attack`).
    """

    name: ClassVar[str] = "apgd"

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        steps: int = 100,
        loss: Loss = "ce",
        restarts: int = 1,
        rho: float = 0.75,
        seed: int | None = None,
        output: OutputSelector = None,
    ) -> None:
        super().__init__(model, eps=eps, output=output)
        if loss not in _LOSSES:
            raise ConfigError(f"APGD loss must be one of {list(_LOSSES)}, got {loss!r}")
        self.loss: Loss = loss
        self.steps = positive_int(steps, "steps")
        self.restarts = positive_int(restarts, "restarts")
        self.rho = check_probability(rho, "rho")
        self._random = SeededGenerators(seed)

    def _check_num_classes(self, num_classes: int) -> None:
        if self.loss == "dlr" and num_classes < 3:
            raise ConfigError(
                f"APGD's DLR loss needs at least 3 classes but the model has {num_classes}; "
                f'use loss="ce" (apgd,loss=ce)'
            )

    def perturb(self, x: Tensor, y: Tensor | None) -> Tensor:
        """Up to ``restarts`` runs of Algorithm 1, each on the samples not yet misclassified.

        Args:
            x: the clean batch ``(N, …)`` in the input domain, on the model's device.
            y: the true labels ``(N,)`` (``None`` raises :class:`~lsakit.errors.InputError`).

        Returns:
            The adversarial examples, shaped like ``x``, within the ε-ball and the input domain:
            a misclassified iterate where a run found one, else the highest-loss point over all
            runs; samples misclassified on the clean input are returned unchanged.
        """
        y = require_labels(y)
        with torch.no_grad():
            worst = WorstCase.start(x, self._logits(x).argmax(dim=1) != y)
        for _ in range(self.restarts):
            robust = worst.robust()
            if robust.numel() == 0:
                break
            worst.update(robust, self._single_run(x[robust], y[robust]))
        return worst.result

    def _single_run(self, x: Tensor, y: Tensor, loss_fn: LossFn | None = None) -> _RunResult:
        """One run of Algorithm 1 on the samples (x, y), every sample with its own step size.

        ``loss_fn`` replaces the configured loss (APGD-T passes its targeted DLR loss here).
        """
        loss_fn = _LOSSES[self.loss] if loss_fn is None else loss_fn
        t = 2 * self._random.uniform(x) - 1
        t_max = per_sample_view(t.abs().flatten(1).amax(dim=1), x)
        x_adv = clamp_domain(x + self.eps * t / (t_max + 1e-12))
        grad, loss, logits = self._loss_gradient(x_adv, y, loss_fn)
        fooled = logits.argmax(dim=1) != y
        adversarial, best, best_loss, grad_best = x_adv, x_adv, loss, grad
        step = torch.full_like(per_sample_view(loss, x), INITIAL_STEP_FACTOR * self.eps)
        x_prev = x_adv
        interval, decrement, min_interval = checkpoint_intervals(self.steps)
        losses = [loss]  # losses[i] = loss after i steps (0: the start)
        since_check = 0
        best_loss_at_check = best_loss
        halved_at_check = torch.ones_like(fooled)  # the reference starts with "reduced"
        for i in range(self.steps):
            momentum = MOMENTUM if i > 0 else 1.0
            z = project_linf(x_adv + step * grad.sign(), x, self.eps)
            x_next = x_adv + momentum * (z - x_adv) + (1 - momentum) * (x_adv - x_prev)
            x_prev, x_adv = x_adv, project_linf(x_next, x, self.eps)

            grad, loss, logits = self._loss_gradient(x_adv, y, loss_fn)
            now_fooled = logits.argmax(dim=1) != y
            adversarial = torch.where(per_sample_view(now_fooled, x), x_adv, adversarial)
            fooled = fooled | now_fooled
            improved = loss > best_loss
            best = torch.where(per_sample_view(improved, x), x_adv, best)
            grad_best = torch.where(per_sample_view(improved, x), grad, grad_best)
            best_loss = torch.where(improved, loss, best_loss)
            losses.append(loss)

            since_check += 1
            if since_check == interval:
                halve = halve_step(
                    torch.stack(losses[-interval - 1 :]),
                    self.rho,
                    halved_at_check,
                    best_loss_at_check,
                    best_loss,
                )
                halved_at_check, best_loss_at_check = halve, best_loss
                step = torch.where(per_sample_view(halve, x), step / 2, step)
                x_adv = torch.where(per_sample_view(halve, x), best, x_adv)
                grad = torch.where(per_sample_view(halve, x), grad_best, grad)
                since_check = 0
                interval = max(interval - decrement, min_interval)
        return _RunResult(
            best=best,
            best_loss=best_loss,
            adversarial=adversarial,
            fooled=fooled,
            step=step.flatten(),
        )

    def params(self) -> dict[str, Any]:
        """The settings as JSON-able values, for reports and result files.

        Returns:
            ``eps`` (and ``output`` when given), ``steps``, ``loss``, ``restarts``, ``rho`` and
            ``seed``.
        """
        return {
            **self._base_params(),
            "steps": self.steps,
            "loss": self.loss,
            "restarts": self.restarts,
            "rho": self.rho,
            "seed": self._random.seed,
        }
