"""The two kinds of perturbation LSA compares, and the pieces every attack shares.

LSA (Khalooei et al., 2022, arXiv:2202.02626, Sec. 3) measures how far each layer's representation
moves when the input is perturbed, either by statistical noise or by an adversarial attack. Both are
:class:`Perturbation` objects called as ``perturbation(x, y) -> x_perturbed``:

* ``__call__`` validates the batch once (:func:`~lsakit._checks.check_inputs`; labels for attacks)
  and then runs the abstract :meth:`Perturbation.perturb`, the algorithm itself;
* :class:`Attack` adds the model plumbing: device follows the model, the model runs in eval mode
  (each submodule's own mode restored afterwards, error or not), gradients are taken with
  :func:`torch.autograd.grad` for the input only, so parameter ``.grad`` fields are never touched.

The threat-model projections (:func:`project_linf`, :func:`project_l2`, :func:`clamp_domain`) live
here once; every attack in this package uses them. They clip to the declared input domain
(:mod:`lsakit.domain`: [0, 1] unless declared otherwise; no clipping at all for unbounded inputs).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lsakit import speed
from lsakit._checks import INPUT_HIGH, INPUT_LOW, check_inputs, check_labels, check_nonnegative
from lsakit._outputs import OutputSelector, select_logits
from lsakit._torch import eval_mode, model_device
from lsakit.domain import current_domain
from lsakit.errors import InputError, LsakitWarning, warn

#: A per-sample loss ``(logits (N, C), labels (N,)) -> (N,)`` that an attack ascends.
LossFn = Callable[[Tensor, Tensor], Tensor]

#: Guards divisions by a norm that can be exactly zero (zero gradient, zero perturbation).
_TINY = 1e-12


# --------------------------------------------------------------------------------------------
# Threat-model projections, shared by every attack
# --------------------------------------------------------------------------------------------


def clamp_unit(x: Tensor) -> Tensor:
    """Clamp to [0, 1], the default input domain, whatever is declared (see :func:`clamp_domain`).

    Args:
        x: any tensor, e.g. a batch ``(N, …)``.

    Returns:
        ``x`` with every element clamped to [0, 1]; same shape, dtype and device.
    """
    return x.clamp(INPUT_LOW, INPUT_HIGH)


def clamp_domain(x: Tensor) -> Tensor:
    """Clip to the declared input domain (:func:`lsakit.domain.current_domain`); unbounded: x."""
    return current_domain().clamp(x)


def per_sample_view(values: Tensor, like: Tensor) -> Tensor:
    """Reshape per-sample values (N,) to (N, 1, …, 1) so they broadcast against ``like``."""
    return values.reshape(-1, *([1] * (like.dim() - 1)))


def l2_norms(delta: Tensor) -> Tensor:
    """Per-sample Euclidean norms ‖δᵢ‖₂ of a batch (N, …) → (N,)."""
    norms: Tensor = torch.linalg.vector_norm(delta.flatten(1), ord=2, dim=1)
    return norms


def project_linf(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Project onto B∞(x, ε) ∩ D (Madry et al., 2018, Eq. 2's Π for the L∞ ball), D the declared
    input domain ([0, 1]ᵈ by default).

    Clipping to D after the box projection stays inside the ball because x ∈ D: the clip only
    moves coordinates towards x. For ε = 0 the result is bit-exactly ``x``.

    Args:
        x_adv: the points to project, shaped like ``x``.
        x: the clean batch ``(N, …)``, the centres of the balls (inside the domain).
        eps: ε ≥ 0, the L∞ radius in input units.

    Returns:
        The projected points, shaped like ``x``: within ε of ``x`` in every element and inside
        the domain.
    """
    return clamp_domain(torch.clamp(x_adv, x - eps, x + eps))


def project_l2(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Project onto B₂(x, ε) ∩ D per sample: δ ← δ·min(1, ε/‖δ‖₂), then clip to the declared
    domain D ([0, 1]ᵈ by default).

    The clip after the radial projection only shrinks ``|δᵢ|`` coordinate-wise (x ∈ D), so the
    result stays in the ball. ``δ = 0`` is safe (no division by zero).

    Args:
        x_adv: the points to project, shaped like ``x``.
        x: the clean batch ``(N, …)``, the centres of the balls (inside the domain).
        eps: ε ≥ 0, the L2 radius of each sample's ball (over all its elements), in input units.

    Returns:
        The projected points, shaped like ``x``: each sample within L2 distance ε of its clean
        point and inside the domain.
    """
    delta = x_adv - x
    scale = (eps / l2_norms(delta).clamp_min(_TINY)).clamp(max=1.0)
    return clamp_domain(x + delta * per_sample_view(scale, delta))


def normalize_l2(g: Tensor) -> Tensor:
    """Per-sample unit-L2 direction g/‖g‖₂; a zero gradient stays zero (no NaN)."""
    return g / per_sample_view(l2_norms(g).clamp_min(_TINY), g)


def cross_entropy_per_sample(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy per sample (N,): the loss J(θ, x, y) of FGSM and PGD.

    Args:
        logits: the model's logits, ``(N, C)``.
        y: the integer labels, ``(N,)`` in [0, C).

    Returns:
        The unreduced cross-entropy of each sample, ``(N,)``.
    """
    return F.cross_entropy(logits, y, reduction="none")


def require_labels(y: Tensor | None) -> Tensor:
    """Labels for an attack; ``None`` only reaches here if ``perturb`` is called directly."""
    if y is None:
        raise InputError("attacks need the true labels: call attack(x, y) with y of shape (N,)")
    return y


# --------------------------------------------------------------------------------------------
# Seeded randomness
# --------------------------------------------------------------------------------------------


class SeededGenerators:
    """One :class:`torch.Generator` per device, seeded with ``seed``, created lazily and re-used.

    Re-use (rather than re-seeding every call) means a fresh object with the same seed replays the
    same sequence of draws over its calls, while successive batches still get different noise.
    ``seed=None`` uses torch's global generator (so :func:`~lsakit._torch.seed_everything` applies).
    """

    def __init__(self, seed: int | None) -> None:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise InputError(f"seed must be an integer or None, got {seed!r}")
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def on(self, device: torch.device) -> torch.Generator | None:
        """The generator for ``device`` (``None`` when unseeded: use the global one)."""
        if self.seed is None:
            return None
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def uniform(self, like: Tensor, shape: tuple[int, ...] | None = None) -> Tensor:
        """U[0, 1) draws with the dtype and device of ``like``, and its shape unless given."""
        return torch.rand(
            like.shape if shape is None else shape,
            generator=self.on(like.device),
            dtype=like.dtype,
            device=like.device,
        )

    def normal(self, like: Tensor) -> Tensor:
        """N(0, 1) draws with the shape, dtype and device of ``like``."""
        return torch.randn(
            like.shape, generator=self.on(like.device), dtype=like.dtype, device=like.device
        )


# --------------------------------------------------------------------------------------------
# The two base classes
# --------------------------------------------------------------------------------------------


class Perturbation(ABC):
    """A map from a batch of inputs in [0, 1] to perturbed inputs of the same shape and dtype.

    Subclasses set ``name`` (the registry name) and ``is_adversarial`` and implement
    :meth:`perturb` and :meth:`params`. Call the object, not :meth:`perturb`: ``__call__`` validates
    the inputs and sets up the context the algorithm relies on.
    """

    name: ClassVar[str]
    is_adversarial: ClassVar[bool]

    def __call__(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Perturb a batch ``x`` (N, …) in [0, 1]; ``y`` (N,) are the labels (attacks need them)."""
        check_inputs(x.detach(), "x")
        return self._run(x, y)

    def _run(self, x: Tensor, y: Tensor | None) -> Tensor:
        with torch.no_grad():
            return self.perturb(x, y).detach()

    @abstractmethod
    def perturb(self, x: Tensor, y: Tensor | None) -> Tensor:
        """The algorithm, on validated inputs; it must not mutate ``x`` or ``y``.

        Args:
            x: the batch ``(N, …)`` in the input domain, as ``__call__`` passes it (for an
                attack: detached and on the model's device).
            y: the labels ``(N,)``, or ``None`` (noise ignores them; attacks need them).

        Returns:
            The perturbed batch, same shape and dtype as ``x``.
        """

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The settings as JSON-able values, for reports and result files.

        Returns:
            The settings by constructor keyword (what ``repr`` shows), e.g. ``{"eps": 0.3, …}``.
        """

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({settings})"


class ZeroGradientWarning(LsakitWarning):
    """An attack met an exactly-zero input gradient on some samples, which it could not move."""


class Attack(Perturbation):
    """A white-box attack on ``model`` within an ε-ball; the loop plumbing lives here once.

    Args:
        model: the classifier; its device decides where the attack runs.
        eps: the radius ε of the threat model (≥ 0), in input units ([0, 1] pixels).
        output: where the logits are in the model's output (see
            :func:`~lsakit._outputs.select_logits`); ``None`` for a tensor, a tuple's first element
            or a dict's ``"logits"``.
    """

    is_adversarial: ClassVar[bool] = True
    #: False for score-based (black-box) attacks, which may run under torch.inference_mode()
    needs_gradients: ClassVar[bool] = True

    def __init__(self, model: nn.Module, *, eps: float, output: OutputSelector = None) -> None:
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.eps = check_nonnegative(eps, "eps")
        self.output = output

    #: after a call: samples of the batch whose input gradient was exactly zero at every
    #: gradient the attack took of the whole batch (0 when it took none)
    last_zero_gradient: int = 0
    # Per call (set by _attack_context): the batch size, and which samples had only zero
    # whole-batch gradients so far. Per object: whether the zero-gradient warning was given.
    _batch_size: int = -1
    _zero_gradient: Tensor | None = None
    _warned_zero_gradient: bool = False

    def _run(self, x: Tensor, y: Tensor | None) -> Tensor:
        with self._attack_context(x, y) as (x_dev, y_dev):
            x_adv = self.perturb(x_dev, y_dev).detach()
            self._report_zero_gradients(x_dev.shape[0])
            return x_adv

    def _report_zero_gradients(self, n: int) -> None:
        """Count (and, once per attack object, warn about) samples the gradient never moved."""
        mask = self._zero_gradient
        self.last_zero_gradient = 0 if mask is None or self.eps == 0 else int(mask.sum())
        if self.last_zero_gradient and not self._warned_zero_gradient:
            self._warned_zero_gradient = True
            warn(
                ZeroGradientWarning(
                    f"{self.name}: the input gradient is exactly zero on "
                    f"{self.last_zero_gradient} of {n} samples, which the attack leaves "
                    f"unattacked (a zero-initialised head, saturated outputs or a "
                    f"non-differentiable step); their perturbed results measure nothing — "
                    f"counted per batch in last_zero_gradient and in LSA results"
                ),
                stacklevel=3,
            )

    @contextlib.contextmanager
    def _attack_context(self, x: Tensor, y: Tensor | None) -> Iterator[tuple[Tensor, Tensor]]:
        """Move to the model's device, check the labels, and run in eval mode with input grads."""
        if y is None:
            raise InputError(
                f"{self.name} is an attack and needs the true labels: call it as (x, y)"
            )
        check_labels(y, x.shape[0], "y")
        if self.needs_gradients and torch.is_inference_mode_enabled():
            raise InputError(
                f"{self.name} needs input gradients, which torch.inference_mode() forbids; "
                "call the attack outside inference_mode (torch.no_grad() is fine)"
            )
        device = model_device(self.model)
        x, y = x.detach().to(device), y.detach().to(device)
        # The logits' shape and the label range are checked on the attack's own first forward
        # pass (see _logits), so validation costs no extra forward.
        self._labels_to_check: Tensor | None = y
        self._batch_size = x.shape[0]
        self._zero_gradient = None
        try:
            with eval_mode(self.model), torch.enable_grad():
                yield x, y
        finally:
            self._labels_to_check = None

    def _check_num_classes(self, num_classes: int) -> None:
        """Hook for attacks whose loss needs a minimum number of classes (APGD-DLR)."""

    def _logits(self, x: Tensor) -> Tensor:
        # Mixed precision (lsakit.speed): only the forward is autocast; the logits, and so the
        # loss and its input gradient, come back in the input's precision.
        with speed.attack_autocast(x.device):
            raw = self.model(x)
        logits = speed.full_precision(select_logits(raw, self.output), x)
        y = getattr(self, "_labels_to_check", None)
        if y is not None:
            self._labels_to_check = None
            if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
                raise InputError(
                    f"the model's logits have shape {tuple(logits.shape)}; attacks expect "
                    f"(N, classes) = ({x.shape[0]}, C) — fix output= or the model's head"
                )
            check_labels(y, x.shape[0], "y", num_classes=logits.shape[1])
            self._check_num_classes(logits.shape[1])
        return logits

    def _loss_gradient(
        self, x_adv: Tensor, y: Tensor, loss_fn: LossFn = cross_entropy_per_sample
    ) -> tuple[Tensor, Tensor, Tensor]:
        """∇ₓ Σᵢ loss(f(xᵢ), yᵢ) with the per-sample losses and logits, all detached.

        Summing keeps each sample's gradient independent of the batch size. Only ``x_adv`` is
        differentiated, so the parameters' ``.grad`` fields are left exactly as they were.
        """
        x_adv = x_adv.detach().requires_grad_(True)
        logits = self._logits(x_adv)
        losses = loss_fn(logits, y)
        grad = (
            torch.autograd.grad(losses.sum(), x_adv, allow_unused=True)[0]
            if losses.requires_grad
            else None
        )
        if grad is None:
            # Silently returning x here would report a broken model as perfectly robust.
            raise InputError(
                f"{self.name}: the model's output does not depend differentiably on its input "
                "(detached or computed under no_grad); gradient attacks need a differentiable model"
            )
        grad = grad.detach()
        if grad.shape[0] == self._batch_size:  # whole-batch gradients only
            zero = grad.flatten(1).abs().amax(dim=1) == 0
            self._zero_gradient = (
                zero if self._zero_gradient is None else self._zero_gradient & zero
            )
        return grad, losses.detach(), logits.detach()

    def _base_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"eps": self.eps}
        if self.output is not None:
            params["output"] = self.output if isinstance(self.output, (int, str)) else "<callable>"
        return params
