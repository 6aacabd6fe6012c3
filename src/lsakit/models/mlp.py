"""Model A of the LSA paper: the multilayer perceptron for the two-moons data set.

Khalooei et al. 2022 (arXiv:2202.02626), Table 1, model A:
Linear(100) → ELU → Linear(100) → ELU → Linear(100) → ELU → Linear(2).
The three ELU modules are the layers L0, L1, L2 the paper analyses and regularizes.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from lsakit.models._validation import positive_int


def model_a(*, in_features: int = 2, hidden: int = 100, num_classes: int = 2) -> nn.Sequential:
    """Build model A (paper Table 1): three hidden ``Linear → ELU`` layers and a linear head.

    Args:
        in_features: input dimension (2 for the two-moons data).
        hidden: width of each of the three hidden layers.
        num_classes: number of output logits.

    Returns:
        An ``nn.Sequential`` with named children ``fc1, elu1, fc2, elu2, fc3, elu3, fc4``; the
        ELU modules are separate instances so a forward hook sees each layer (paper L0..L2).
        With the defaults it has 20,702 parameters.
    """
    in_features = positive_int(in_features, "in_features")
    hidden = positive_int(hidden, "hidden")
    num_classes = positive_int(num_classes, "num_classes")
    return nn.Sequential(
        OrderedDict[str, nn.Module](
            [
                ("fc1", nn.Linear(in_features, hidden)),
                ("elu1", nn.ELU(inplace=False)),
                ("fc2", nn.Linear(hidden, hidden)),
                ("elu2", nn.ELU(inplace=False)),
                ("fc3", nn.Linear(hidden, hidden)),
                ("elu3", nn.ELU(inplace=False)),
                ("fc4", nn.Linear(hidden, num_classes)),
            ]
        )
    )
