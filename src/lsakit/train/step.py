"""One training step: the objective's loss plus every regularizer's term, one optimizer update.

The regularizers (:class:`~lsakit.train.regularizers.Regularizer`: AT-LR, LSP, the sparsity
penalty) are one list. Those that read layer representations share one
:class:`~lsakit.probe.LayerProbe` (gradients kept) around the forward passes the objective already
runs; only an objective without a clean forward (FGSM, fast, PGD, APGD) needs one extra clean
forward, which stops after the last regularized layer (:meth:`LayerProbe.truncated`: the layers
after it are not computed, so their BatchNorm statistics see only the objective's batches, as in
the base method), and no extra adversarial forward is ever run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lsakit import distributed, speed
from lsakit._torch import eval_mode
from lsakit.config import Amp
from lsakit.errors import ConfigError
from lsakit.probe import LayerProbe, LayerSpec, resolve_layers
from lsakit.train.objectives import Objective, ObjectiveOutput
from lsakit.train.regularizers import Regularizer, RegularizerInputs

#: One regularizer, several (their terms added in this order) or none.
Regularizers = Regularizer | Sequence[Regularizer] | None


class NonFiniteLoss(Exception):
    """The step's loss is NaN or infinite (raised before any update)."""

    def __init__(self, value: float) -> None:
        super().__init__(value)
        self.value = value


def as_list(regularizers: Regularizers) -> list[Regularizer]:
    """``regularizers`` as a list."""
    if regularizers is None:
        return []
    if isinstance(regularizers, Sequence):
        return list(regularizers)
    return [regularizers]


def training_step(
    model: nn.Module,
    objective: Objective,
    regularizers: Regularizers,
    probe: LayerProbe | None,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    *,
    amp: Amp = "off",
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[float, float, Tensor | None]:
    """One optimizer step of ``objective`` + regularizers: (loss, regularizer terms, logits).

    Each regularizer's term is added to the objective's loss, in order. Those that read layer
    representations get them from ``probe`` (built on the union of their prepared ``layers``,
    ``detach=False``; see :func:`prepare_regularizers`): the objective's own captures, plus one
    extra clean forward for an objective without one. ``logits`` are those accuracy is reported
    on (adversarial when the objective has them). Raises :class:`NonFiniteLoss` before any update
    (on every rank when any rank's loss is not finite). ``model`` may be a
    DistributedDataParallel wrapper: its training forwards synchronize the gradients, and the
    probe must sit on the wrapped module. ``amp`` autocasts the forwards (the loss is summed in
    float32); ``scaler`` (fp16) scales the loss for the backward pass.
    """
    with speed.autocast(amp, x.device):
        loss, reg_value, output = _losses(model, objective, as_list(regularizers), probe, x, y)
    value = loss.item()
    # Under torchrun every rank must take the same branch, or the others wait in backward.
    if (
        distributed.any_rank(not math.isfinite(value))
        if distributed.is_distributed()
        else (not math.isfinite(value))
    ):
        raise NonFiniteLoss(value)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        torch.autograd.backward(loss)
        optimizer.step()
    else:  # fp16: steps whose scaled gradients overflow are skipped and the scale lowered
        torch.autograd.backward(scaler.scale(loss))
        scaler.step(optimizer)
        scaler.update()
    logits = output.adv_logits if output.adv_logits is not None else output.clean_logits
    return value, reg_value, logits


def _losses(
    model: nn.Module,
    objective: Objective,
    regularizers: list[Regularizer],
    probe: LayerProbe | None,
    x: Tensor,
    y: Tensor,
) -> tuple[Tensor, float, ObjectiveOutput]:
    """The forward half of :func:`training_step`: (total loss in float32, regularizer terms,
    the objective's output)."""
    output = objective(model, x, y, probe)
    loss = output.loss.float()
    reg_value = 0.0
    inputs = RegularizerInputs(model=model, x=x, x_adv=output.x_adv)
    reading = [r.name for r in regularizers if r.layers]
    if reading:
        if probe is None:
            raise ConfigError(
                f"the {' and '.join(reading)} term{'s' if len(reading) > 1 else ''} "
                f"read{'s' if len(reading) == 1 else ''} layer representations: pass a "
                "LayerProbe(model, layers, detach=False) on the layers of prepare_regularizers"
            )
        clean_reps = output.clean_reps
        if clean_reps is None:  # stopped after the last regularized layer, on the module itself
            with probe.truncated():
                probe.model(x)
            clean_reps = probe.take()
        inputs = RegularizerInputs(
            model=model, x=x, x_adv=output.x_adv, names=[layer.name for layer in probe.layers],
            clean=clean_reps, adv=output.adv_reps,
        )  # fmt: skip
    for regularizer in regularizers:
        term = regularizer.term(inputs)
        loss = loss + term
        reg_value += term.detach().item()
    return loss, reg_value, output


def captured_names(model: nn.Module, layers: LayerSpec, example: Tensor) -> list[str]:
    """The names (forward order) a probe on ``layers`` captures: labels and globs resolved."""
    with eval_mode(model):
        return [layer.name for layer in resolve_layers(model, layers, example)]


def prepare_regularizers(
    model: nn.Module, regularizers: Sequence[Regularizer], example: Tensor
) -> tuple[list[Regularizer], list[str] | None]:
    """The regularizers prepared for ``model`` (exact representation names, found with dry
    forwards of ``example``), and the layers of the one probe that serves them all (None: no
    term reads representations).

    The probe captures the union of their layers by exact name, and each term picks its own; a
    probe shared by several terms needs layers called once per forward.
    """
    prepared = [r.prepare(model, example) for r in regularizers]
    reading = [r for r in prepared if r.layers]
    if not reading:
        return prepared, None
    layers = list(dict.fromkeys(name for r in reading for name in r.layers))
    if len(reading) > 1:
        shared = captured_names(model, layers, example)
        if any("#" in name for name in shared):
            raise ConfigError(
                f"the {' and '.join(r.name for r in reading)} regularizers share one probe and "
                f"need layers called once per forward ({', '.join(shared)}); pick other layers"
            )
    return prepared, layers
