"""Square Attack, L∞: a score-based black-box attack by random search (Andriushchenko, Croce,
Flammarion & Hein, ECCV 2020, "Square Attack: a query-efficient black-box adversarial attack via
random search", Algorithm 1 and Sec. 3.1).

Only the model's scores are used — no gradients: everything runs under :func:`torch.no_grad`.
It minimises the margin loss  m(x, y) = z_y − max_{j≠y} z_j  (misclassified once m ≤ 0):

1. start at the vertical-stripe point x + ε·s, with one random sign s ∈ {−1, +1} per channel and
   image column (constant down each column);
2. at query i, pick a random h_i × h_i square (side h_i = round(√(p_i·H·W)), at least 1) and set
   the whole square of each channel to ±2ε with one random sign per channel, add it to the best
   point, project back onto B∞(x, ε) ∩ [0, 1]ᵈ (so the square lands on a vertex of the ball), and
   keep it if the margin dropped;
3. stop, per sample, as soon as it is misclassified: fooled samples are not queried again.

The fraction p_i of pixels changed follows the reference's piecewise-constant schedule: p_init
halved after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 (``fra31/auto-attack``,
``autoattack/square.py``: ``p_selection``, ``attack_single_run`` for L∞). With
``rescale_schedule=True`` (the reference class's default, ``resc_schedule=True``) those iterations
are of a 10 000-update budget, rescaled to the actual one; with ``rescale_schedule=False``
(what AutoAttack's ``standard`` version builds, and what :mod:`lsakit.suite` uses) they are
absolute iterations, so with 5000 updates the squares stop shrinking at 2 × 2 pixels on MNIST
(after iteration 4000) where the rescaled schedule reaches 1 × 1. Deviations, all deliberate:

* each sample draws its own square position and signs (the reference draws one square and one set
  of signs per iteration, shared by the whole batch, which the paper does not do);
* the square's corner is uniform over every position that fits, including the last row and
  column (the reference's ``random_int(0, h − s)`` never picks the last);
* ``queries`` is the whole budget per sample, the stripe start included: the reference's
  ``n_queries`` updates after the start are ``queries = n_queries + 1`` here (the suite's 5001 is
  AutoAttack's 1 + 5000), and the schedule is rescaled to those ``queries − 1`` updates, as the
  reference rescales to ``n_queries``; the clean forward pass that finds the already
  misclassified samples (returned unchanged, with 0 queries) is not counted, as in the reference;
* inputs without two spatial axes are treated as images of size 1 × 1 with one channel per
  feature ((N, D) → (N, D, 1, 1)); each query then moves to a random vertex of the ball.
  (N, H, W) inputs are one-channel images; (N, C, …, H, W) merge the leading axes into channels.

Example::

    >>> attack = Square(model, eps=8 / 255, queries=5000, seed=0)
    >>> x_adv = attack(x, y)             # x: (N, …) in [0, 1], y: (N,) int; x_adv like x
    >>> result = attack.search(x, y)     # + result.queries (N,), result.fooled (N,)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lsakit._checks import check_inputs, check_probability
from lsakit._outputs import OutputSelector
from lsakit.errors import InputError
from lsakit.perturb.base import (
    Attack,
    SeededGenerators,
    clamp_domain,
    project_linf,
    require_labels,
)
from lsakit.validate import positive_int

#: The reference's p schedule: (last iteration, divisor of p_init) on a 10 000-query budget.
_SCHEDULE_BUDGET = 10_000
_P_SCHEDULE: tuple[tuple[int, int], ...] = (
    (10, 1),
    (50, 2),
    (200, 4),
    (500, 8),
    (1000, 16),
    (2000, 32),
    (4000, 64),
    (6000, 128),
    (8000, 256),
)

_P_FINAL_DIVISOR = 512


@dataclass(frozen=True)
class SquareResult:
    """The outcome of :meth:`Square.search` on a batch of N samples."""

    adversarial: Tensor  # (N, …) the point with the lowest margin found (x for clean mistakes)
    queries: Tensor  # (N,) int64 model evaluations spent on each sample
    fooled: Tensor  # (N,) bool: margin ≤ 0 at ``adversarial`` (clean mistakes included)


def p_schedule(iteration: int, updates: int, p_init: float, *, rescale: bool = True) -> float:
    """Fraction of pixels a square covers at update ``iteration`` (0-based) of ``updates``.

    The reference's ``p_selection``: p_init is halved after iterations 10, 50, 200, 500, 1000,
    2000, 4000, 6000 and 8000; with ``rescale`` (``resc_schedule=True``) the iteration is first
    rescaled from a budget of ``updates`` (the reference's ``n_queries``) to one of 10 000.
    """
    it = int(iteration / updates * _SCHEDULE_BUDGET) if rescale else iteration
    for last, divisor in _P_SCHEDULE:
        if it <= last:
            return p_init / divisor
    return p_init / _P_FINAL_DIVISOR


def square_side(p: float, height: int, width: int) -> int:
    """Side of a square covering a fraction ``p`` of an H × W image: round(√(p·H·W)) in [1, min]."""
    return min(max(round(math.sqrt(p * height * width)), 1), height, width)


def margin(logits: Tensor, y: Tensor) -> Tensor:
    """Margin loss z_y − max_{j≠y} z_j per sample (N,); ≤ 0 means misclassified."""
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], -torch.inf)
    return z_y - others.amax(dim=1)


def as_images(x: Tensor) -> Tensor:
    """A (N, C, H, W) view of a batch: see the module docstring for non-image inputs."""
    n = x.shape[0]
    if x.dim() <= 2:
        return x.reshape(n, -1, 1, 1)
    if x.dim() == 3:
        return x.unsqueeze(1)
    return x.reshape(n, -1, *x.shape[-2:])


class Square(Attack):
    """Square Attack, L∞, score-based black-box (Andriushchenko et al., 2020).

    Args:
        model: the classifier; only its outputs are used (no gradients).
        eps: ε ≥ 0, the L∞ radius in input units.
        queries: model evaluations per sample, the start included (≥ 1).
        p_init: initial fraction of pixels a square covers (0 < p_init ≤ 1).
        rescale_schedule: rescale the schedule of p to the budget (the reference's
            ``resc_schedule``; ``True`` as its default, ``False`` as AutoAttack's standard suite).
        seed: seed of a dedicated generator for the random draws (``None``: torch's global one).
        output: where the logits are in the model's output (see :class:`~.base.Attack`).
    """

    name: ClassVar[str] = "square"
    needs_gradients: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        queries: int = 5000,
        p_init: float = 0.8,
        rescale_schedule: bool = True,
        seed: int | None = None,
        output: OutputSelector = None,
    ) -> None:
        super().__init__(model, eps=eps, output=output)
        self.queries = positive_int(queries, "queries")
        self.p_init = check_probability(p_init, "p_init")
        if self.p_init == 0:
            raise InputError("p_init must lie in (0, 1], got 0; the default is 0.8")
        if not isinstance(rescale_schedule, bool):
            raise InputError(f"rescale_schedule must be True or False, got {rescale_schedule!r}")
        self.rescale_schedule = rescale_schedule
        self._random = SeededGenerators(seed)

    def search(self, x: Tensor, y: Tensor) -> SquareResult:
        """Run the attack and report the queries spent and which samples were fooled.

        Args:
            x: the clean batch ``(N, …)`` in the input domain (moved to the model's device).
            y: the true labels ``(N,)``.

        Returns:
            A :class:`~lsakit.perturb.square.SquareResult` on the model's device: ``adversarial``
            (shaped like ``x``: the point :meth:`perturb` returns), ``queries`` ``(N,)`` (int64,
            model evaluations spent on each sample; the clean pass is not counted) and
            ``fooled`` ``(N,)`` (bool: margin ≤ 0 at ``adversarial``, clean mistakes included).
        """
        check_inputs(x.detach(), "x")
        with self._attack_context(x, y) as (x_dev, y_dev), torch.no_grad():
            return self._search(x_dev, y_dev)

    def _run(self, x: Tensor, y: Tensor | None) -> Tensor:
        with self._attack_context(x, y) as (x_dev, y_dev), torch.no_grad():
            return self.perturb(x_dev, y_dev).detach()

    def perturb(self, x: Tensor, y: Tensor | None) -> Tensor:
        """The random search of :meth:`search`, without its report.

        Args:
            x: the clean batch ``(N, …)`` in the input domain, on the model's device.
            y: the true labels ``(N,)`` (``None`` raises :class:`~lsakit.errors.InputError`).

        Returns:
            The point of lowest margin found for each sample, shaped like ``x``, within the
            ε-ball and the input domain; ``x`` itself for samples misclassified on the clean
            input, and for every sample when ε = 0.
        """
        return self._search(x, require_labels(y)).adversarial

    def _search(self, x: Tensor, y: Tensor) -> SquareResult:
        images = as_images(x)
        best = images.clone()
        best_margin = margin(self._logits(x), y)
        queries = torch.zeros(y.shape, dtype=torch.long, device=x.device)
        attacked = (best_margin > 0).nonzero().squeeze(1)
        if self.eps > 0 and attacked.numel() > 0:
            start = self._stripes(images[attacked])
            best[attacked] = start
            best_margin[attacked] = self._margin(start, y[attacked], x)
            queries[attacked] += 1
            for i in range(self.queries - 1):
                active = (best_margin > 0).nonzero().squeeze(1)
                if active.numel() == 0:
                    break
                candidate = self._square_step(best[active], images[active], i)
                candidate_margin = self._margin(candidate, y[active], x)
                queries[active] += 1
                improved = candidate_margin < best_margin[active]
                best[active[improved]] = candidate[improved]
                best_margin[active[improved]] = candidate_margin[improved]
        return SquareResult(
            adversarial=best.reshape(x.shape), queries=queries, fooled=best_margin <= 0
        )

    def _margin(self, images: Tensor, y: Tensor, like: Tensor) -> Tensor:
        return margin(self._logits(images.reshape(-1, *like.shape[1:])), y)

    def _random_signs(self, like: Tensor, shape: tuple[int, ...]) -> Tensor:
        return torch.where(self._random.uniform(like, shape) < 0.5, -1.0, 1.0).to(like.dtype)

    def _stripes(self, images: Tensor) -> Tensor:
        """Vertical-stripe start: x + ε·s with one sign per sample, channel and column."""
        n, c, _, w = images.shape
        return clamp_domain(images + self.eps * self._random_signs(images, (n, c, 1, w)))

    def _square_step(self, best: Tensor, images: Tensor, iteration: int) -> Tensor:
        """Add ±2ε on a random square per sample (one sign per channel), then project."""
        n, c, h, w = images.shape
        p = p_schedule(
            iteration, max(self.queries - 1, 1), self.p_init, rescale=self.rescale_schedule
        )
        side = square_side(p, h, w)
        generator = self._random.on(images.device)
        top = torch.randint(0, h - side + 1, (n, 1), generator=generator, device=images.device)
        left = torch.randint(0, w - side + 1, (n, 1), generator=generator, device=images.device)
        rows, cols = torch.arange(h, device=images.device), torch.arange(w, device=images.device)
        in_rows = (rows >= top) & (rows < top + side)  # (n, h)
        in_cols = (cols >= left) & (cols < left + side)  # (n, w)
        square = (in_rows[:, None, :, None] & in_cols[:, None, None, :]).to(images.dtype)
        update = 2 * self.eps * square * self._random_signs(images, (n, c, 1, 1))
        return project_linf(best + update, images, self.eps)

    def params(self) -> dict[str, Any]:
        """The settings as JSON-able values, for reports and result files.

        Returns:
            ``eps`` (and ``output`` when given), ``queries``, ``p_init``, ``rescale_schedule``
            and ``seed``.
        """
        return {
            **self._base_params(),
            "queries": self.queries,
            "p_init": self.p_init,
            "rescale_schedule": self.rescale_schedule,
            "seed": self._random.seed,
        }
