"""Model A of the LSA paper: the multilayer perceptron for the two-moons data set.

Khalooei et al. 2022 (arXiv:2202.02626), Table 1, model A:
Linear(100) → ELU → Linear(100) → ELU → Linear(100) → ELU → Linear(1 or 2).
The three ELU modules are the layers L0, L1, L2 the paper analyses and regularizes. The authors'
slides show the head as Linear(1): one logit, a sigmoid and binary cross-entropy.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from lsakit.errors import ConfigError
from lsakit.validate import MODEL_ARGUMENT, positive_int


class BinaryLogits(nn.Module):
    """One logit ``z`` (shape (N, 1)) → the two logits ``[0, z]`` (shape (N, 2)).

    Why: softmax over ``[0, z]`` gives class 1 the probability ``e^z / (1 + e^z) = sigmoid(z)``,
    so softmax cross-entropy over ``[0, z]`` *is* binary cross-entropy with ``sigmoid(z)`` — the
    same loss value and the same gradient with respect to ``z`` (hence to the input and to every
    weight). Every attack, objective, sweep and the trainer, written for class logits, then work
    unchanged on a single-logit model, and ``argmax`` predicts class 1 exactly when ``z > 0``.
    The added zero logit has no parameters; the module is not an activation, so the LSA probe does
    not see it.
    """

    def forward(self, z: Tensor) -> Tensor:
        return torch.cat([torch.zeros_like(z), z], dim=1)


def model_a(
    *, in_features: int = 2, hidden: int = 100, num_classes: int = 2, outputs: int | None = None
) -> nn.Sequential:
    """Build model A (paper Table 1): three hidden ``Linear → ELU`` layers and a linear head.

    Args:
        in_features: input dimension (2 for the two-moons data).
        hidden: width of each of the three hidden layers.
        num_classes: number of classes (logits the model returns).
        outputs: width of the last Linear: ``None`` (the default) or ``num_classes`` — one logit
            per class, ``fc4 = Linear(hidden, num_classes)``; ``1`` — the paper's single logit
            (``num_classes`` must be 2): ``fc4 = Linear(hidden, 1)`` followed by
            :class:`BinaryLogits`, which returns ``[0, z]``, so cross-entropy on the model's
            output equals binary cross-entropy with ``sigmoid(z)``, gradients included.

    Returns:
        An ``nn.Sequential`` with named children ``fc1, elu1, fc2, elu2, fc3, elu3, fc4`` (and
        ``logits`` with one output); the ELU modules are separate instances so a forward hook sees
        each layer (paper L0..L2). With the defaults it has 20,702 parameters (20,601 with one
        output).
    """
    in_features = positive_int(in_features, "in_features", prefix=MODEL_ARGUMENT)
    hidden = positive_int(hidden, "hidden", prefix=MODEL_ARGUMENT)
    num_classes = positive_int(num_classes, "num_classes", prefix=MODEL_ARGUMENT)
    width = (
        num_classes if outputs is None else positive_int(outputs, "outputs", prefix=MODEL_ARGUMENT)
    )
    if width == 1 and num_classes != 2:
        raise ConfigError(f"outputs=1 (one logit) needs num_classes=2, got {num_classes}")
    if width not in (1, num_classes):
        raise ConfigError(f"outputs must be 1 or num_classes ({num_classes}), got {width}")
    layers: list[tuple[str, nn.Module]] = [
        ("fc1", nn.Linear(in_features, hidden)),
        ("elu1", nn.ELU(inplace=False)),
        ("fc2", nn.Linear(hidden, hidden)),
        ("elu2", nn.ELU(inplace=False)),
        ("fc3", nn.Linear(hidden, hidden)),
        ("elu3", nn.ELU(inplace=False)),
        ("fc4", nn.Linear(hidden, width)),
    ]
    if width == 1:
        layers.append(("logits", BinaryLogits()))
    return nn.Sequential(OrderedDict[str, nn.Module](layers))
