"""PreAct ResNet-18 for CIFAR-10.

He, Zhang, Ren & Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016; the CIFAR variant
used by Wong et al. 2020 ("Fast is better than free") and Rice et al. 2020 ("Overfitting in
adversarially robust deep learning"), itself from ``kuangliu/pytorch-cifar``. Submodule names
(``conv1``, ``layer<i>.<j>.{bn1,conv1,bn2,conv2,shortcut.0}``, ``bn``, ``linear``) follow that
implementation so its state dicts map onto this model by key (plus ``normalize.*`` buffers).
PyTorch default initialization, as the reference.

Activation modules: two per block and one before the pool: 2 × 8 + 1 = 17. 11,172,170 parameters,
as the reference.
"""

from __future__ import annotations

import torch
from torch import nn

from lsakit.models.normalize import CIFAR10_MEAN, CIFAR10_STD, Normalize
from lsakit.validate import MODEL_ARGUMENT, positive_int


class PreActBlock(nn.Module):
    """Pre-activation basic block: ``BN → ReLU → conv3×3 → BN → ReLU → conv3×3`` plus shortcut.

    A projecting shortcut (1×1 conv, when stride or width change) takes the activated input
    ``relu1(bn1(x))``, as in the reference; the identity shortcut takes the raw ``x``.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Sequential | None = (
            nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))
            if stride != 1 or in_planes != planes
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu1(self.bn1(x))
        shortcut: torch.Tensor = x if self.shortcut is None else self.shortcut(activated)
        out: torch.Tensor = self.conv1(activated)
        out = self.conv2(self.relu2(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """PreAct ResNet for 3×32×32 inputs in [0, 1]: four stages of widths 64, 128, 256, 512.

    Args:
        blocks_per_stage: the number of blocks of each of the four stages, integers ≥ 1
            (``(2, 2, 2, 2)``: ResNet-18).
        num_classes: number of logits, an integer ≥ 1.
    """

    def __init__(self, blocks_per_stage: tuple[int, int, int, int], *, num_classes: int = 10):
        super().__init__()
        num_classes = positive_int(num_classes, "num_classes", prefix=MODEL_ARGUMENT)
        self.normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        widths, strides = (64, 128, 256, 512), (1, 2, 2, 2)
        in_planes = 64
        stages: list[nn.Sequential] = []
        for width, stride, num_blocks in zip(widths, strides, blocks_per_stage, strict=True):
            blocks = []
            for i in range(positive_int(num_blocks, "blocks_per_stage", prefix=MODEL_ARGUMENT)):
                blocks.append(PreActBlock(in_planes, width, stride if i == 0 else 1))
                in_planes = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(512)
        self.relu = nn.ReLU(inplace=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify a batch.

        Args:
            x: images ``(N, 3, H, W)`` in [0, 1], 32×32 for CIFAR-10 (CIFAR-10 normalization is
                applied here).

        Returns:
            The logits, ``(N, num_classes)``.
        """
        out = self.conv1(self.normalize(x))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = self.flatten(self.pool(self.relu(self.bn(out))))
        logits: torch.Tensor = self.linear(out)
        return logits


def preact_resnet18(*, num_classes: int = 10) -> PreActResNet:
    """Build PreAct ResNet-18 (2 blocks per stage) for CIFAR-10."""
    return PreActResNet((2, 2, 2, 2), num_classes=num_classes)
