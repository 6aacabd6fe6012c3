"""Model C of the LSA paper: VGG-19 with batch normalization for CIFAR-10.

Khalooei et al. 2022 (arXiv:2202.02626), Table 1, model C; the architecture is the CIFAR variant
of VGG (Simonyan & Zisserman 2015) with BatchNorm after every convolution and a single
``Linear(512, num_classes)`` classifier, as in the widely used ``kuangliu/pytorch-cifar``
implementation. Submodule names (``features.<i>``, ``classifier``) follow that implementation so
its state dicts map onto this model by key. PyTorch default initialization.
"""

from __future__ import annotations

from typing import Final, Literal

import torch
from torch import nn

from lsakit.models.normalize import CIFAR10_MEAN, CIFAR10_STD, Normalize
from lsakit.validate import MODEL_ARGUMENT, positive_int

#: Output channels of each 3×3 conv block; "M" is a 2×2 max-pool. 16 conv blocks, 5 pools.
VGG19_CONFIG: Final[tuple[int | Literal["M"], ...]] = (
    *(64, 64, "M"),
    *(128, 128, "M"),
    *(256, 256, 256, 256, "M"),
    *(512, 512, 512, 512, "M"),
    *(512, 512, 512, 512, "M"),
)


def _conv_blocks(config: tuple[int | Literal["M"], ...], in_channels: int) -> nn.Sequential:
    """Conv(3×3, padding 1) → BatchNorm → ReLU per channel count; MaxPool(2) per "M"."""
    layers: list[nn.Module] = []
    channels = in_channels
    for entry in config:
        if entry == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers += [
            nn.Conv2d(channels, entry, kernel_size=3, padding=1),
            nn.BatchNorm2d(entry),
            nn.ReLU(inplace=False),
        ]
        channels = entry
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """CIFAR VGG: ``Normalize → features → flatten → classifier`` for 3×32×32 inputs in [0, 1].

    Five 2×2 pools bring 32×32 down to 1×1, so the classifier sees exactly 512 features.

    Args:
        config: output channels of each 3×3 conv block, ``"M"`` for a 2×2 max-pool (e.g.
            :data:`VGG19_CONFIG`); its pools must bring 32×32 down to 1×1, as the classifier
            takes the last block's channels as its features.
        num_classes: number of logits, an integer ≥ 1.
    """

    def __init__(self, config: tuple[int | Literal["M"], ...], *, num_classes: int = 10) -> None:
        super().__init__()
        num_classes = positive_int(num_classes, "num_classes", prefix=MODEL_ARGUMENT)
        self.normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
        self.features = _conv_blocks(config, in_channels=3)
        self.flatten = nn.Flatten()
        last_channels = [c for c in config if c != "M"][-1]
        self.classifier = nn.Linear(int(last_channels), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify a batch.

        Args:
            x: images ``(N, 3, 32, 32)`` in [0, 1] (CIFAR-10 normalization is applied here).

        Returns:
            The logits, ``(N, num_classes)``.
        """
        out = self.features(self.normalize(x))
        logits: torch.Tensor = self.classifier(self.flatten(out))
        return logits


def vgg19(*, num_classes: int = 10) -> VGG:
    """Build VGG-19-BN for CIFAR-10 (paper model C): 16 conv+BN+ReLU blocks, 20,040,522 params."""
    return VGG(VGG19_CONFIG, num_classes=num_classes)
