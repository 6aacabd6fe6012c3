"""What every training objective is (:mod:`lsakit.train.objectives`): the defaults of the
published recipes, :class:`ObjectiveOutput` and the :class:`Objective` base class with its call
protocol (validation, device, probe).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from lsakit._checks import check_inputs, check_labels
from lsakit._outputs import OutputSelector, select_logits
from lsakit._torch import model_device
from lsakit.errors import InputError
from lsakit.perturb import Attack
from lsakit.probe import LayerProbe

#: Default budget ε (MNIST, Madry et al. 2018; TRADES and MART use the same on MNIST).
DEFAULT_EPS = 0.3
#: Default step α of the iterative inner maximizations (official MNIST recipes: 0.01).
DEFAULT_ALPHA = 0.01
#: Default number of steps of the iterative inner maximizations (official MNIST recipes: 40).
DEFAULT_STEPS = 40
#: Default β of TRADES and MART (both official codes use 6.0).
DEFAULT_BETA = 6.0
#: Fast AT's step α = 1.25·ε (Wong et al. 2020, §4: α = 1.25ε avoids catastrophic overfitting
#: better than α = ε at the same cost).
FAST_STEP_FACTOR = 1.25
#: Standard deviation of TRADES' random start x + 0.001·N(0, 1) (official code).
TRADES_START_STD = 0.001

#: Published recipes for the iterative objectives (``build_objective(name, **recipe)``).
MNIST_RECIPE: dict[str, float | int] = {"eps": 0.3, "alpha": 0.01, "steps": 40}
CIFAR10_RECIPE: dict[str, float | int] = {"eps": 0.031, "alpha": 0.007, "steps": 10}


@dataclass
class ObjectiveOutput:
    """What one objective call produced.

    Attributes:
        loss: scalar, differentiable with respect to the model's parameters.
        clean_logits: logits of the objective's own clean training forward (None if it has none).
        adv_logits: logits of the training forward on x̂ (None for ``standard``).
        x_adv: the adversarial batch (detached; None for ``standard``).
        clean_reps: φ_l(x) captured by the probe on the clean training forward (with grad when the
            probe was built with ``detach=False``); None without a probe or a clean forward.
        adv_reps: φ_l(x̂) captured on the adversarial training forward; None likewise.
    """

    loss: Tensor
    clean_logits: Tensor | None = None
    adv_logits: Tensor | None = None
    x_adv: Tensor | None = None
    clean_reps: list[Tensor] | None = None
    adv_reps: list[Tensor] | None = None


class Objective(ABC):
    """A training loss ``objective(model, x, y, probe=None) -> ObjectiveOutput``.

    Subclasses set ``name`` and ``needs_clean_forward`` and implement :meth:`compute`. Call the
    object: ``__call__`` validates the batch, moves it to the model's device and checks the probe.
    """

    name: ClassVar[str]
    #: Whether the loss itself runs a clean training forward (so φ_l(x) comes for free).
    needs_clean_forward: ClassVar[bool]
    #: Whether the loss trains on adversarial examples.
    adversarial: ClassVar[bool] = True

    def __init__(self, *, output: OutputSelector = None) -> None:
        self.output = output
        self._attack: Attack | None = None

    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, probe: LayerProbe | None = None
    ) -> ObjectiveOutput:
        """The loss on one batch ``x`` (N, …) in [0, 1] with labels ``y`` (N,)."""
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        check_inputs(x.detach(), "x")
        check_labels(y, x.shape[0], "y")
        if probe is not None and not probe.active:
            raise InputError(
                "the probe is not active; call the objective inside `with LayerProbe(model, "
                "layers, detach=False) as probe:`"
            )
        device = model_device(model)
        return self.compute(model, x.detach().to(device), y.to(device), probe)

    @abstractmethod
    def compute(
        self, model: nn.Module, x: Tensor, y: Tensor, probe: LayerProbe | None
    ) -> ObjectiveOutput:
        """The algorithm, on validated inputs on the model's device."""

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The settings as JSON-able values (for configs, metrics and reports)."""

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({settings})"

    # -- shared pieces -----------------------------------------------------------------------
    def _base_params(self) -> dict[str, Any]:
        if self.output is None:
            return {}
        return {"output": self.output if isinstance(self.output, (int, str)) else "<callable>"}

    def _forward(
        self, model: nn.Module, x: Tensor, y: Tensor, probe: LayerProbe | None
    ) -> tuple[Tensor, list[Tensor] | None]:
        """One training forward (current mode): its logits, and the probe's capture if any."""
        logits = select_logits(model(x), self.output)
        if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
            raise InputError(
                f"the model's logits have shape {tuple(logits.shape)}; objectives expect "
                f"(N, classes) = ({x.shape[0]}, C) — fix output= or the model's head"
            )
        # Label range against the real number of classes: a cheap min/max instead of the opaque
        # device-side assert cross_entropy raises on CUDA.
        check_labels(y, x.shape[0], "y", num_classes=logits.shape[1])
        return logits, (probe.take() if probe is not None else None)

    def _attack_for(self, model: nn.Module, make: Callable[[nn.Module], Attack]) -> Attack:
        """The attack on ``model``, built once and reused so a seeded generator keeps advancing
        across batches (a fresh seeded attack per batch would replay the same random start)."""
        if self._attack is None or self._attack.model is not model:
            self._attack = make(model)
        return self._attack

    @staticmethod
    def _generate(attack: Attack, x: Tensor, y: Tensor, probe: LayerProbe | None) -> Tensor:
        """x̂ = attack(x, y), with the probe paused so the attack's forwards are not captured."""
        with _paused(probe):
            return attack(x, y)


@contextlib.contextmanager
def _paused(probe: LayerProbe | None) -> Iterator[None]:
    if probe is None:
        yield
    else:
        with probe.paused():
            yield
