"""FAB-T: the targeted Fast Adaptive Boundary attack, L∞, as AutoAttack runs it (Croce & Hein,
ICML 2020, "Minimally distorted adversarial examples with a fast adaptive boundary attack",
Algorithm 1; the targeted variant is FAB-T of Croce & Hein, ICML 2020, "Reliable evaluation of
adversarial robustness with an ensemble of diverse parameter-free attacks", Sec. 4).

FAB looks for the *smallest* L∞ perturbation that changes the decision. For a target class t of a
sample (x, y), each iteration linearises the boundary between y and t at the current iterate x⁽ᵏ⁾,

    π(x⁽ᵏ⁾) = {z : f(x⁽ᵏ⁾) + ∇f(x⁽ᵏ⁾)·(z − x⁽ᵏ⁾) = 0},   f = z_t − z_y,

and takes the minimal L∞ steps onto that hyperplane inside [0, 1]ᵈ (:func:`projection_linf`)
both from x⁽ᵏ⁾ (δ⁽ᵏ⁾) and from the original point x (δ_orig), then mixes them with a weight biased
towards the original point, overshooting by η:

    α = min(‖δ⁽ᵏ⁾‖∞ / (‖δ⁽ᵏ⁾‖∞ + ‖δ_orig‖∞), α_max)
    x⁽ᵏ⁺¹⁾ = clamp₀¹((1 − α)·(x⁽ᵏ⁾ + η·δ⁽ᵏ⁾) + α·(x + η·δ_orig)).

When x⁽ᵏ⁺¹⁾ is misclassified (any class other than y counts), it is kept if it is the closest to x
found so far, and the iterate steps back towards x: x⁽ᵏ⁺¹⁾ ← x + β·(x⁽ᵏ⁺¹⁾ − x). A run returns the
closest misclassified iterate (or x if there is none).

As in AutoAttack's "standard" evaluation (``fra31/auto-attack``, ``autoattack/fab_base.py``:
``FABAttack.attack_single_run`` with ``is_targeted=True`` and ``perturb``; the gradients of
``autoattack/fab_pt.py``: ``get_diff_logits_grads_batch_targeted``; the projection of
``autoattack/fab_projections.py``: ``projection_linf``), the targets are the
``n_target_classes`` highest-scoring non-true classes of the clean logits, tried from the most
likely one down, each with ``restarts`` runs; every run attacks only the samples no earlier run
has fooled, the first run of each target starts at x and later ones at a random point
x + ε/2 · u/‖u‖∞ (u ~ U[−1, 1]ᵈ, clamped to [0, 1]), and a sample counts as fooled — and gets the
run's point — only if that point is misclassified *and* within ‖x_adv − x‖∞ ≤ ε. Everything else
(samples misclassified on the clean input, samples no run fools within ε) is returned unchanged,
so the result always lies in B∞(x, ε) ∩ [0, 1]ᵈ. Defaults are AutoAttack's: 100 iterations,
9 targets, 1 restart, α_max = 0.1, η = 1.05, β = 0.9.

Deviations, all deliberate; where the reference runs (float32 inputs, C > ``n_target_classes``
classes, one restart as in AutoAttack) the results agree with it up to float rounding:

* ``n_target_classes`` larger than C − 1 is capped at C − 1 (the reference indexes past the first
  class and fails with an IndexError); the true class is never a target even when it ties for the
  top clean logit (the reference's sort may then pick y itself as the "target");
* the input's dtype is kept (the reference casts to float32); with ``seed`` set the random starts
  come from the attack's own generator (the reference re-seeds torch's global generator);
* :func:`projection_linf` finds the optimal radius with :func:`torch.searchsorted` over the
  sorted breakpoints instead of the reference's hand-written bisection: the same problem and the
  same solution, including the reference's answer when the hyperplane misses the box;
* ``eps = 0`` returns x after the clean forward pass without iterating (the reference iterates,
  then rejects every point since none is within 0 of x and misclassified);
* :meth:`FABT.search` also reports the smallest distance at which a misclassified point was found
  for each sample, beyond ε too — FAB's minimal-norm estimate.

Example::

    >>> attack = FABT(model, eps=8 / 255, steps=100, n_target_classes=9, seed=0)
    >>> x_adv = attack(x, y)            # x: (N, …) in [0, 1], y: (N,) int; x_adv like x
    >>> result = attack.search(x, y)    # + result.distance (N,), result.fooled (N,)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from lsakit._checks import check_inputs, check_nonnegative, check_probability
from lsakit._outputs import OutputSelector
from lsakit.domain import current_domain
from lsakit.errors import ConfigError, InputError
from lsakit.perturb.apgd_targeted import target_classes
from lsakit.perturb.base import (
    _TINY,
    Attack,
    LossFn,
    SeededGenerators,
    clamp_domain,
    per_sample_view,
    require_labels,
)
from lsakit.validate import positive_int

#: Floor of the step norms in the mixing weight α (reference: ``1e-8``).
_MIN_STEP_NORM = 1e-8


@dataclass(frozen=True)
class FABResult:
    """The outcome of :meth:`FABT.search` on a batch of N samples."""

    adversarial: Tensor  # (N, …) the points returned: x unless fooled within ε
    distance: Tensor  # (N,) smallest ‖x_adv − x‖∞ of a misclassified point found; 0 for clean
    #                   mistakes, inf where none was found (may exceed ε)
    fooled: Tensor  # (N,) bool: misclassified at ``adversarial`` (clean mistakes included)


@dataclass(frozen=True)
class _RunResult:
    """One FAB run on a sub-batch: its closest misclassified iterate."""

    adversarial: Tensor  # (n, …) closest misclassified iterate (x where none)
    distance: Tensor  # (n,) its L∞ distance to x (inf where none)


def projection_linf(
    points: Tensor,
    w: Tensor,
    b: Tensor,
    low: Tensor | float = 0.0,
    high: Tensor | float = 1.0,
) -> Tensor:
    """Minimal L∞ steps from ``points`` onto the hyperplanes {z : w·z = b} inside the box
    [low, high]ᵈ ([0, 1]ᵈ by default; ±inf bounds allowed).

    Row by row, solves  min ‖δ‖∞  s.t.  w·(t + δ) = b,  low ≤ t + δ ≤ high  for points t in the box
    (Croce & Hein, 2020, the box-constrained projection of FAB; reference:
    ``autoattack/fab_projections.py``: ``projection_linf``). With radius λ, the best a step can do
    is to move every coordinate by min(λ, room) against the sign of w (``room`` = distance to the
    box face on that side), which changes w·z by g(λ) = Σᵢ ``|wᵢ|``·min(λ, roomᵢ): a piecewise
    linear, non-decreasing function, so the smallest λ with g(λ) = ``|w·t − b|`` is found exactly
    on the segment between two sorted breakpoints.

    If the hyperplane does not meet the box (``|w·t − b|`` > g(∞)), the step goes to the box point
    closest to it, as in the reference: every coordinate with wᵢ ≠ 0 moves all the way to its face
    against the sign of w, the others stay. Coordinates with wᵢ = 0 never move.

    Args:
        points: (n, d) points t in the box.
        w: (n, d) hyperplane normals.
        b: (n,) offsets.
        low, high: the box, numbers or tensors broadcastable to (n, d).

    Returns:
        The steps δ, ``(n, d)``, with t + δ in the box.
    """
    if points.dim() != 2 or w.shape != points.shape or b.shape != points.shape[:1]:
        raise InputError(
            f"projection_linf expects points (n, d), w (n, d) and b (n,); got "
            f"{tuple(points.shape)}, {tuple(w.shape)} and {tuple(b.shape)}"
        )
    residual = (w * points).sum(dim=1) - b
    # Orient each hyperplane so that w·t ≥ b: the step must lower w·z by `excess` ≥ 0.
    side = torch.where(residual >= 0, 1.0, -1.0).to(w.dtype)
    w = w * side[:, None]
    excess = residual * side
    up = w < 0  # these coordinates move towards 1, the others (w > 0) towards 0
    weight = w.abs()
    room = torch.where(up, high - points, points - low)
    room = torch.where(w != 0, room, torch.zeros_like(room))
    if bool(torch.isinf(room).any()):
        # An unbounded side: the radius never exceeds excess / Σ|wᵢ| over the unbounded
        # coordinates (moving only those reaches the plane), so capping their room there (with
        # a margin) leaves the minimum unchanged and keeps the breakpoint arithmetic finite.
        free = torch.isinf(room)
        cap = 2 * excess / (weight * free).sum(dim=1).clamp_min(_TINY) + 1
        room = torch.where(free, cap[:, None].expand_as(room), room)
    # g at the sorted breakpoints q₀ ≤ q₁ ≤ …: g(q_k) = Σ_{j<k} u_j q_j + q_k Σ_{j≥k} u_j.
    q, order = room.sort(dim=1)
    u = weight.gather(1, order)
    below = (u * q).cumsum(dim=1) - u * q
    above = u.flip(1).cumsum(dim=1).flip(1)
    g_at = below + q * above
    reachable = excess < g_at[:, -1]
    # On (q_{k−1}, q_k] with k = #{g(q_j) < excess}: g(λ) = below_k + λ·above_k.
    k = torch.searchsorted(g_at.contiguous(), excess[:, None].contiguous())
    k = k.clamp(max=points.shape[1] - 1)
    radius = (excess[:, None] - below.gather(1, k)) / above.gather(1, k).clamp_min(_TINY)
    move = torch.where(reachable[:, None], torch.minimum(radius.clamp_min(0), room), room)
    return torch.where(up, move, -move)


def _towards(target: Tensor) -> LossFn:
    """The per-sample gap f = z_t − z_y whose zero level is the y/t boundary."""

    def gap(logits: Tensor, y: Tensor) -> Tensor:
        z_t = logits.gather(1, target[:, None]).squeeze(1)
        return z_t - logits.gather(1, y[:, None]).squeeze(1)

    return gap


def linf_distances(x_adv: Tensor, x: Tensor) -> Tensor:
    """Per-sample ‖x_adv − x‖∞ of a batch (N, …) → (N,)."""
    return (x_adv - x).flatten(1).abs().amax(dim=1)


class FABT(Attack):
    """Targeted Fast Adaptive Boundary attack, L∞ (Croce & Hein, 2020), as run by AutoAttack.

    A minimal-norm attack: each run walks to the decision boundary between y and a target class
    and keeps the closest misclassified point; a sample is fooled if that point is within ε.

    Args:
        model: the classifier (device and eval mode handled by the attack); ≥ 2 classes.
        eps: ε ≥ 0, the L∞ radius in input units (also sets the random starts' size, ε/2).
        steps: iterations of each run (≥ 1).
        n_target_classes: how many of the top non-true classes to target (≥ 1; capped at C − 1).
        restarts: runs per target class; all but the first start at random points (≥ 1).
        alpha_max: α_max ∈ [0, 1], the largest weight of the step from the original point.
        eta: η ≥ 1, the overshoot factor of the projection steps.
        beta: β ∈ (0, 1], the factor the iterate's distance to x is scaled by once misclassified.
        seed: seed of a dedicated generator for the random starts (``None``: torch's global one).
        output: where the logits are in the model's output (see :class:`~.base.Attack`).
    """

    name: ClassVar[str] = "fab_t"

    def __init__(
        self,
        model: nn.Module,
        *,
        eps: float,
        steps: int = 100,
        n_target_classes: int = 9,
        restarts: int = 1,
        alpha_max: float = 0.1,
        eta: float = 1.05,
        beta: float = 0.9,
        seed: int | None = None,
        output: OutputSelector = None,
    ) -> None:
        super().__init__(model, eps=eps, output=output)
        self.steps = positive_int(steps, "steps")
        self.n_target_classes = positive_int(n_target_classes, "n_target_classes")
        self.restarts = positive_int(restarts, "restarts")
        self.alpha_max = check_probability(alpha_max, "alpha_max")
        self.eta = check_nonnegative(eta, "eta")
        if self.eta < 1:
            raise InputError(f"eta must be ≥ 1 (an overshoot), got {eta!r}; the default is 1.05")
        self.beta = check_probability(beta, "beta")
        if self.beta == 0:
            raise InputError("beta must lie in (0, 1], got 0; the default is 0.9")
        self._random = SeededGenerators(seed)

    def _check_num_classes(self, num_classes: int) -> None:
        if num_classes < 2:
            raise ConfigError(
                f"FAB-T needs a target class other than the true one, so at least 2 classes, "
                f"but the model has {num_classes}"
            )

    def search(self, x: Tensor, y: Tensor) -> FABResult:
        """Run the attack and also report the smallest distance found and who was fooled.

        Args:
            x: the clean batch ``(N, …)`` in the input domain (moved to the model's device).
            y: the true labels ``(N,)``.

        Returns:
            A :class:`~lsakit.perturb.fab.FABResult` on the model's device: ``adversarial``
            (shaped like ``x``: the point :meth:`perturb` returns), ``distance`` ``(N,)`` (the
            smallest ‖x_adv − x‖∞ of a misclassified point found, beyond ε too; 0 for clean
            mistakes, inf where none) and ``fooled`` ``(N,)`` (bool: misclassified at
            ``adversarial``). With ε = 0 the runs still take place (for ``distance``), but only
            the clean mistakes count as fooled.
        """
        check_inputs(x.detach(), "x")
        with self._attack_context(x, y) as (x_dev, y_dev):
            return self._search(x_dev, y_dev)

    def perturb(self, x: Tensor, y: Tensor | None) -> Tensor:
        """Targeted FAB runs on the samples not yet fooled; keep the points found within ε.

        Args:
            x: the clean batch ``(N, …)`` in the input domain, on the model's device.
            y: the true labels ``(N,)`` (``None`` raises :class:`~lsakit.errors.InputError`).

        Returns:
            The adversarial examples, shaped like ``x``, inside B∞(x, ε) and the input domain:
            the closest misclassified iterate of the first run that found one within ε, else
            ``x`` unchanged (so also for clean mistakes, and for every sample when ε = 0).
        """
        y = require_labels(y)
        if self.eps == 0:
            with torch.no_grad():
                self._logits(x)  # the same checks of the labels and logits as an attack
            return x.clone()
        return self._search(x, y).adversarial

    def _search(self, x: Tensor, y: Tensor) -> FABResult:
        with torch.no_grad():
            clean_logits = self._logits(x)
        fooled = clean_logits.argmax(dim=1) != y
        distance = torch.where(fooled, 0.0, torch.inf).to(x.dtype)
        result = x.clone()
        count = min(self.n_target_classes, clean_logits.shape[1] - 1)
        for target in target_classes(clean_logits, y, count).unbind(dim=1):
            for restart in range(self.restarts):
                robust = (~fooled).nonzero().squeeze(1)
                if robust.numel() == 0:
                    break
                x_run, y_run = x[robust], y[robust]
                run = self._single_run(x_run, y_run, target[robust], random_start=restart > 0)
                # As the reference: fooled iff the returned point is misclassified and within ε.
                with torch.no_grad():
                    wrong = self._logits(run.adversarial).argmax(dim=1) != y_run
                success = wrong & (linf_distances(run.adversarial, x_run) <= self.eps)
                result[robust[success]] = run.adversarial[success]
                fooled[robust[success]] = True
                distance[robust] = torch.minimum(distance[robust], run.distance)
        return FABResult(adversarial=result, distance=distance, fooled=fooled)

    def _single_run(
        self, x: Tensor, y: Tensor, target: Tensor, *, random_start: bool
    ) -> _RunResult:
        """One run of FAB towards ``target`` on the samples (x, y), all clean-correct."""
        n = x.shape[0]
        origin = x.flatten(1)
        x_k = x
        if random_start:
            u = 2 * self._random.uniform(x) - 1
            u_max = per_sample_view(u.abs().flatten(1).amax(dim=1), x)
            x_k = clamp_domain(x + 0.5 * self.eps * u / u_max.clamp_min(_TINY))
        domain = current_domain()
        low = torch.cat((domain.low_like(x).flatten(1),) * 2)
        high = torch.cat((domain.high_like(x).flatten(1),) * 2)
        gap = _towards(target)
        best = x.clone()
        best_distance = torch.full((n,), torch.inf, dtype=x.dtype, device=x.device)
        for _ in range(self.steps):
            grad, f, _ = self._loss_gradient(x_k, y, gap)
            w = grad.flatten(1)
            b = (w * x_k.flatten(1)).sum(dim=1) - f  # the linearised boundary {z : w·z = b}
            with torch.no_grad():
                steps = projection_linf(
                    torch.cat((x_k.flatten(1), origin)),
                    torch.cat((w, w)),
                    torch.cat((b, b)),
                    low,
                    high,
                )
            norms = steps.abs().amax(dim=1).clamp_min(_MIN_STEP_NORM)
            from_here, from_origin = norms[:n], norms[n:]
            alpha = per_sample_view(
                (from_here / (from_here + from_origin)).clamp(0, self.alpha_max), x
            )
            step_here = steps[:n].reshape(x.shape)
            step_origin = steps[n:].reshape(x.shape)
            x_k = clamp_domain(
                (x_k + self.eta * step_here) * (1 - alpha) + (x + self.eta * step_origin) * alpha
            )
            with torch.no_grad():
                adversarial = self._logits(x_k).argmax(dim=1) != y
            dist = linf_distances(x_k, x)
            closer = adversarial & (dist < best_distance)
            best = torch.where(per_sample_view(closer, x), x_k, best)
            best_distance = torch.where(closer, dist, best_distance)
            x_k = torch.where(per_sample_view(adversarial, x), x + (x_k - x) * self.beta, x_k)
        return _RunResult(adversarial=best, distance=best_distance)

    def params(self) -> dict[str, Any]:
        """The settings as JSON-able values, for reports and result files.

        Returns:
            ``eps`` (and ``output`` when given), ``steps``, ``n_target_classes``, ``restarts``,
            ``alpha_max``, ``eta``, ``beta`` and ``seed``.
        """
        return {
            **self._base_params(),
            "steps": self.steps,
            "n_target_classes": self.n_target_classes,
            "restarts": self.restarts,
            "alpha_max": self.alpha_max,
            "eta": self.eta,
            "beta": self.beta,
            "seed": self._random.seed,
        }
