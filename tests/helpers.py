"""Small hand-built models shared by the tests (importable as ``helpers``)."""

from __future__ import annotations

import torch
from torch import nn


def tiny_mlp(seed: int = 0) -> nn.Sequential:
    """4 → 8 → 8 → 3 with ELU then ReLU: two activation modules, L0 and L1."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ELU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


def tiny_cnn(seed: int = 0) -> nn.Sequential:
    """1×8×8 images → conv/BN/ReLU → pool → conv/ReLU → linear: three activation layers."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3),
        nn.LeakyReLU(0.1),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 10),
        nn.Tanh(),
        nn.Linear(10, 5),
    )
