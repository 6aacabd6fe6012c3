"""Model B of the LSA paper: the small convolutional network for MNIST.

Khalooei et al. 2022 (arXiv:2202.02626), Table 1, model B:
Conv(16, 5×5) → ReLU → Conv(32, 5×5) → ReLU → MaxPool2 → Conv(64, 5×5) → ReLU → MaxPool2 →
Linear(100) → ReLU → Linear(10). The four ReLU modules are the paper's layers L0..L3.
No input normalization by default (as in the authors' training code): MNIST pixels in [0, 1] go
in directly. ``normalize=True`` puts a :class:`~lsakit.models.Normalize` with MNIST's mean and
standard deviation in front (a candidate convention of the paper protocol, issue 12; the ReLU
layers L0..L3 are the same either way).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from lsakit.errors import ConfigError
from lsakit.models.normalize import MNIST_MEAN, MNIST_STD, Normalize
from lsakit.validate import MODEL_ARGUMENT, positive_int

#: Spatial size after the three valid 5×5 convolutions and two 2×2 pools on a 28×28 input:
#: 28 → 24 → 20 → 10 → 6 → 3.
_FINAL_SIDE = 3


def model_b(
    *, in_channels: int = 1, num_classes: int = 10, normalize: bool = False
) -> nn.Sequential:
    """Build model B (paper Table 1) for 28×28 inputs.

    Args:
        in_channels: input channels (1 for MNIST / Fashion-MNIST).
        num_classes: number of output logits.
        normalize: start with ``Normalize(MNIST_MEAN, MNIST_STD)`` (one channel only).

    Returns:
        An ``nn.Sequential`` with named children ``conv1, relu1, conv2, relu2, pool1, conv3, relu3,
        pool2, flatten, fc1, relu4, fc2`` (``normalize`` first when asked); 123,222 parameters
        with the defaults.
    """
    in_channels = positive_int(in_channels, "in_channels", prefix=MODEL_ARGUMENT)
    num_classes = positive_int(num_classes, "num_classes", prefix=MODEL_ARGUMENT)
    if not isinstance(normalize, bool):
        raise ConfigError(f"model_b: normalize must be true or false, got {normalize!r}")
    if normalize and in_channels != 1:
        raise ConfigError(
            f"model_b: normalize uses MNIST's one-channel statistics; in_channels is {in_channels}"
        )
    front: list[tuple[str, nn.Module]] = (
        [("normalize", Normalize(MNIST_MEAN, MNIST_STD))] if normalize else []
    )
    return nn.Sequential(
        OrderedDict[str, nn.Module](
            [
                *front,
                ("conv1", nn.Conv2d(in_channels, 16, kernel_size=5)),
                ("relu1", nn.ReLU(inplace=False)),
                ("conv2", nn.Conv2d(16, 32, kernel_size=5)),
                ("relu2", nn.ReLU(inplace=False)),
                ("pool1", nn.MaxPool2d(2)),
                ("conv3", nn.Conv2d(32, 64, kernel_size=5)),
                ("relu3", nn.ReLU(inplace=False)),
                ("pool2", nn.MaxPool2d(2)),
                ("flatten", nn.Flatten()),
                ("fc1", nn.Linear(64 * _FINAL_SIDE * _FINAL_SIDE, 100)),
                ("relu4", nn.ReLU(inplace=False)),
                ("fc2", nn.Linear(100, num_classes)),
            ]
        )
    )
