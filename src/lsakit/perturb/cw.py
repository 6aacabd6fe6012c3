"""CW-L∞: PGD on the Carlini–Wagner margin loss (Carlini & Wagner, IEEE S&P 2017, Sec. V.A, the
objective f₆ with κ = 0 on logits; used with PGD as "CW∞" by Madry et al., ICLR 2018, Table 2,
and in later AT evaluations such as TRADES, Zhang et al., ICML 2019).

PGD (Madry et al., 2018) ascends, instead of the cross-entropy, the per-sample margin

    m(x, y) = max_{i≠y} z_i(x) − z_y(x)

which is positive exactly when x is misclassified. Unlike the cross-entropy it does not saturate
when the softmax is confident, so it still gives a useful direction on over-confident models.

Example::

    >>> attack = CWLinf(model, eps=8 / 255, steps=30, seed=0)
    >>> x_adv = attack(x, y)        # x: (N, …) in [0, 1], y: (N,) int; x_adv like x
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lsakit._outputs import OutputSelector
from lsakit.perturb.pgd import PGD


def cw_margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """max_{i≠y} z_i − z_y per sample (N,) (Carlini & Wagner, 2017, f₆ with κ = 0, on logits).

    Args:
        logits: the model's logits, ``(N, C)``.
        y: the true labels, ``(N,)`` in [0, C).

    Returns:
        The margin of each sample, ``(N,)``: positive when another class outscores ``y``.
    """
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], -torch.inf)
    return others.amax(dim=1) - z_y


class CWLinf(PGD):
    """L∞ PGD on the CW margin loss (registry name ``cw``); restarts keep the highest margin.

    Args:
        model: the classifier (device and eval mode handled by the attack).
        eps: ε ≥ 0, the L∞ radius in input units.
        alpha: step size α; ``None`` → 2.5·ε/steps (Madry et al.'s rule, as in :class:`PGD`).
        steps: number of gradient steps (≥ 1).
        random_start: start uniformly in the ε-ball; else from x.
        restarts: independent runs (≥ 1); the per-sample worst case is returned.
        seed: seed of a dedicated generator for the random starts (``None``: torch's global one).
        output: where the logits are in the model's output (see :class:`~.base.Attack`).
    """

    name: ClassVar[str] = "cw"

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        alpha: float | None = None,
        steps: int = 30,
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
            norm="linf",
            seed=seed,
            output=output,
        )

    def loss(self, logits: Tensor, y: Tensor) -> Tensor:
        """The CW margin: ascended by every step and used to rank restarts.

        Args:
            logits: the model's logits, ``(N, C)``.
            y: the true labels, ``(N,)``.

        Returns:
            :func:`cw_margin_loss` per sample, ``(N,)``.
        """
        return cw_margin_loss(logits, y)

    def params(self) -> dict[str, Any]:
        """The settings as JSON-able values, for reports and result files.

        Returns:
            :meth:`PGD.params` without ``norm`` (always L∞ here): ``eps`` (and ``output`` when
            given), ``alpha``, ``steps``, ``random_start``, ``restarts`` and ``seed``.
        """
        params = super().params()
        del params["norm"]  # fixed to L∞; not a constructor keyword of this attack
        return params
