"""APGD-T: targeted auto-PGD with the targeted DLR loss, L∞ (Croce & Hein, ICML 2020, "Reliable
evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks", Sec. 4).

The APGD iteration of :mod:`lsakit.perturb.apgd` (Algorithm 1, same step-size rule, momentum and
checkpoints), run once per target class t with the targeted difference of logits ratio

    DLR-T(x, y, t) = −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e−12),   z sorted as z_π1 ≥ z_π2 ≥ …

(Croce & Hein, 2020, Eq. 7), which needs at least 4 classes. The targets are the
``n_target_classes`` highest-scoring non-true classes of the clean logits, tried from the most
likely one down; each target gets ``restarts`` runs, and every run attacks only the samples that no
earlier run has misclassified (so each sample keeps the first misclassified point found), as in
the reference implementation (``fra31/auto-attack``, ``autoattack/autopgd_base.py``:
``APGDTargetedAttack.perturb``). Success is untargeted — any class other than y counts — as in the
reference. Deviations, all deliberate and shared with :class:`~lsakit.perturb.apgd.APGD`:

* samples no run misclassifies get their highest-loss point over all runs (the reference returns
  the clean input); the targeted losses of different targets share one scale (a logit gap over
  the same normaliser), so comparing them across targets is meaningful;
* ``n_target_classes`` larger than C − 1 is capped at C − 1 (the reference would index past the
  last class);
* with ``seed`` set the random starts come from the attack's own generator.

Example::

    >>> attack = APGDT(model, eps=8 / 255, steps=100, n_target_classes=9, seed=0)
    >>> x_adv = attack(x, y)        # x: (N, …) in [0, 1], y: (N,) int; x_adv like x
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lsakit._outputs import OutputSelector
from lsakit.errors import ConfigError
from lsakit.perturb.apgd import APGD, WorstCase
from lsakit.perturb.base import LossFn, require_labels
from lsakit.validate import positive_int

#: The targeted DLR normaliser uses the 4th-largest logit.
MIN_CLASSES = 4


def targeted_dlr_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR per sample (Croce & Hein, 2020, Eq. 7); ascending it moves z_t above z_y.

    −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2 + 1e−12): shift- and scale-invariant in the logits.

    Args:
        logits: the model's logits, ``(N, C)`` with C ≥ 4.
        y: the true labels, ``(N,)`` in [0, C).
        target: the target class of each sample, ``(N,)`` in [0, C).

    Returns:
        The targeted DLR loss of each sample, ``(N,)``: positive when z_t exceeds z_y.
    """
    z_sorted = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    scale = z_sorted[:, 0] - (z_sorted[:, 2] + z_sorted[:, 3]) / 2
    return -(z_y - z_t) / (scale + 1e-12)


def target_classes(logits: Tensor, y: Tensor, count: int) -> Tensor:
    """The ``count`` highest-scoring classes other than y, best first: (N, count) indices.

    The true class is forced to the top before ranking, so it is never a target even when the
    clean prediction is wrong or tied.
    """
    ranked = logits.scatter(1, y[:, None], torch.inf).argsort(dim=1, descending=True)
    return ranked[:, 1 : count + 1]


def _targeting(target: Tensor) -> LossFn:
    def loss(logits: Tensor, y: Tensor) -> Tensor:
        return targeted_dlr_loss(logits, y, target)

    return loss


class APGDT(APGD):
    """Targeted auto-PGD, L∞, with the targeted DLR loss (Croce & Hein, 2020).

    Args:
        model: the classifier (device and eval mode handled by the attack); ≥ 4 classes.
        eps: ε ≥ 0, the L∞ radius in input units.
        steps: iteration budget N_iter of each run (≥ 1).
        n_target_classes: how many of the top non-true classes to target (≥ 1; capped at C − 1).
        restarts: runs per target class from independent random starts (≥ 1).
        seed: seed of a dedicated generator for the random starts (``None``: torch's global one).
        output: where the logits are in the model's output (see :class:`~.base.Attack`).
    """

    name: ClassVar[str] = "apgd_t"

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        steps: int = 100,
        n_target_classes: int = 9,
        restarts: int = 1,
        seed: int | None = None,
        output: OutputSelector = None,
    ) -> None:
        super().__init__(
            model, eps=eps, steps=steps, loss="dlr", restarts=restarts, seed=seed, output=output
        )
        self.n_target_classes = positive_int(n_target_classes, "n_target_classes")

    def _check_num_classes(self, num_classes: int) -> None:
        if num_classes < MIN_CLASSES:
            raise ConfigError(
                f"APGD-T's targeted DLR loss needs at least {MIN_CLASSES} classes but the model "
                f"has {num_classes}; use apgd (loss=ce) instead"
            )

    def perturb(self, x: Tensor, y: Tensor | None) -> Tensor:
        """APGD runs towards each of the top ``n_target_classes`` targets, ``restarts`` each.

        Every run attacks only the samples that no earlier run has misclassified.

        Args:
            x: the clean batch ``(N, …)`` in the input domain, on the model's device.
            y: the true labels ``(N,)`` (``None`` raises :class:`~lsakit.errors.InputError`).

        Returns:
            The adversarial examples, shaped like ``x``, within the ε-ball and the input domain:
            the misclassified point of the first run that fooled the sample (any class other
            than ``y`` counts), else the highest-loss point over all runs; samples misclassified
            on the clean input are returned unchanged.
        """
        y = require_labels(y)
        with torch.no_grad():
            clean_logits = self._logits(x)
        worst = WorstCase.start(x, clean_logits.argmax(dim=1) != y)
        count = min(self.n_target_classes, clean_logits.shape[1] - 1)
        for target in target_classes(clean_logits, y, count).unbind(dim=1):
            for _ in range(self.restarts):
                robust = worst.robust()
                if robust.numel() == 0:
                    return worst.result
                run = self._single_run(x[robust], y[robust], _targeting(target[robust]))
                worst.update(robust, run)
        return worst.result

    def params(self) -> dict[str, Any]:
        """The settings as JSON-able values, for reports and result files.

        Returns:
            ``eps`` (and ``output`` when given), ``steps``, ``n_target_classes``, ``restarts``
            and ``seed``.
        """
        return {
            **self._base_params(),
            "steps": self.steps,
            "n_target_classes": self.n_target_classes,
            "restarts": self.restarts,
            "seed": self._random.seed,
        }
