"""Model D of the LSA paper: WideResNet for CIFAR-10.

Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016; Khalooei et al. 2022
(arXiv:2202.02626), Table 1, model D. The block structure, submodule names and weight
initialization follow the TRADES / RobustBench implementation
(``robustbench/model_zoo/architectures/wide_resnet.py``), so their state dicts map onto this
model key for key (plus this model's ``normalize.mean`` / ``normalize.std`` buffers). That is
also why the 1×1 projection keeps the reference's name ``convShortcut``.

Differences from the reference, none of which changes the function or the parameters:
every activation is its own ``nn.ReLU(inplace=False)`` module (the reference uses in-place ReLU,
which would overwrite the activations a probe keeps), dropout is an ``nn.Dropout`` module instead
of ``F.dropout``, the global 8×8 average pool is ``nn.AdaptiveAvgPool2d(1)`` (identical on 32×32
inputs), and CIFAR-10 normalization runs inside the model.

Activation modules: two per basic block and one before the pool, i.e. ``6·n + 1 = depth − 3`` with
``n = (depth − 4) / 6`` blocks per stage; WRN-28-10 has 2 × 12 + 1 = 25, WRN-34-10 has 31.
WRN-28-10 has 36,479,194 parameters, as the reference.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lsakit.errors import ConfigError
from lsakit.models.normalize import CIFAR10_MEAN, CIFAR10_STD, Normalize
from lsakit.validate import MODEL_ARGUMENT, fraction, positive_int


class BasicBlock(nn.Module):
    """Pre-activation wide basic block: ``BN → ReLU → conv3×3 → BN → ReLU → [dropout] → conv3×3``.

    When the block changes the width (its first block in a stage), the shortcut is a 1×1
    convolution applied to the *activated* input ``relu1(bn1(x))``, as in the reference;
    otherwise the shortcut is the raw input ``x``.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=False)
        # Identity when p = 0 so an inference-only model carries no random op at all.
        self.dropout: nn.Module = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.convShortcut: nn.Conv2d | None = (
            None
            if in_planes == out_planes
            else nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu1(self.bn1(x))
        shortcut: torch.Tensor = x if self.convShortcut is None else self.convShortcut(activated)
        out: torch.Tensor = self.relu2(self.bn2(self.conv1(activated)))
        out = self.conv2(self.dropout(out))
        return shortcut + out


class NetworkBlock(nn.Module):
    """One stage: ``num_blocks`` basic blocks, the first one changing width and stride."""

    def __init__(
        self, num_blocks: int, in_planes: int, out_planes: int, stride: int, dropout: float
    ) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *(
                BasicBlock(
                    in_planes if i == 0 else out_planes,
                    out_planes,
                    stride if i == 0 else 1,
                    dropout,
                )
                for i in range(num_blocks)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layer(x)
        return out


def blocks_per_stage(depth: int) -> int:
    """``n = (depth − 4) / 6``: each of the 3 stages has n blocks of 2 convs, plus conv1 and fc.

    Raises ConfigError unless depth is an integer ≥ 10 with ``(depth − 4) % 6 == 0``.
    """
    depth = positive_int(depth, "depth", prefix=MODEL_ARGUMENT)
    if depth < 10 or (depth - 4) % 6 != 0:
        valid = ", ".join(str(6 * n + 4) for n in range(1, 6))
        raise ConfigError(
            f"WideResNet depth must satisfy (depth - 4) % 6 == 0 with depth ≥ 10, got {depth}; "
            f"use one of {valid}, …"
        )
    return (depth - 4) // 6


class WideResNet(nn.Module):
    """WRN-depth-k for 3×32×32 CIFAR inputs in [0, 1] (Zagoruyko & Komodakis 2016).

    Channel widths are 16 → 16k → 32k → 64k across the three stages (strides 1, 2, 2).
    Initialization follows the reference: conv weights ~ N(0, 2 / (k_h·k_w·out_channels)),
    BatchNorm weight 1 and bias 0, linear bias 0 (linear weight keeps PyTorch's default).

    Args:
        depth: total depth, an integer ≥ 10 with ``(depth − 4) % 6 == 0`` (28: WRN-28).
        widen_factor: the width multiplier ``k``, an integer ≥ 1.
        dropout: dropout probability in [0, 1) between the two convolutions of each block
            (0: no dropout module at all).
        num_classes: number of logits, an integer ≥ 1.
    """

    def __init__(
        self,
        *,
        depth: int = 28,
        widen_factor: int = 10,
        dropout: float = 0.0,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        n = blocks_per_stage(depth)
        widen_factor = positive_int(widen_factor, "widen_factor", prefix=MODEL_ARGUMENT)
        dropout = fraction(dropout, "dropout", prefix=MODEL_ARGUMENT)
        num_classes = positive_int(num_classes, "num_classes", prefix=MODEL_ARGUMENT)
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)

        self.normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, dropout)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, dropout)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, dropout)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[3], num_classes)
        self._init_like_reference()

    def _init_like_reference(self) -> None:
        if self.conv1.weight.is_meta:
            # Built on the meta device (shapes only): no values to initialize, and the first
            # meta normal_() costs ~1 s of one-off PyTorch setup.
            return
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify a batch.

        Args:
            x: images ``(N, 3, 32, 32)`` in [0, 1] (CIFAR-10 normalization is applied here).

        Returns:
            The logits, ``(N, num_classes)``.
        """
        out = self.conv1(self.normalize(x))
        out = self.block3(self.block2(self.block1(out)))
        out = self.relu(self.bn1(out))
        out = self.flatten(self.pool(out))
        logits: torch.Tensor = self.fc(out)
        return logits


def wrn(
    *, depth: int = 28, widen_factor: int = 10, dropout: float = 0.0, num_classes: int = 10
) -> WideResNet:
    """Build WRN-``depth``-``widen_factor`` (paper model D; WRN-28-10 by default)."""
    return WideResNet(
        depth=depth, widen_factor=widen_factor, dropout=dropout, num_classes=num_classes
    )
