"""Per-channel input normalization as a module, so models always take inputs in [0, 1].

Keeping the normalization inside the model means attacks, noise and ε are all expressed in pixel
space [0, 1] (the convention of the LSA paper, Khalooei et al. 2022, §4, and of RobustBench), and a
checkpoint carries its own normalization constants.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from lsakit.errors import ConfigError, InputError

#: CIFAR-10 training-set channel means and standard deviations (the values used by RobustBench).
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2471, 0.2435, 0.2616)
#: MNIST training-set mean and standard deviation of the pixels (the values of torchvision's
#: MNIST examples).
MNIST_MEAN: tuple[float] = (0.1307,)
MNIST_STD: tuple[float] = (0.3081,)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel (dimension 1) of an input batch ``(N, C, ...)``.

    ``mean`` and ``std`` are persistent buffers, not parameters: they move with ``.to(device)``,
    follow ``.half()``, are saved in the ``state_dict`` (so a checkpoint records them), and an
    optimizer never updates them.

    Args:
        mean: one mean per channel, finite.
        std: one standard deviation per channel, finite and > 0, as many as ``mean``
            (ConfigError otherwise).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        means, stds = [float(m) for m in mean], [float(s) for s in std]
        if not means or len(means) != len(stds):
            raise ConfigError(
                f"Normalize needs one mean and one std per channel, got {len(means)} means and "
                f"{len(stds)} stds; pass sequences of equal, non-zero length"
            )
        if not all(math.isfinite(m) for m in means) or not all(
            math.isfinite(s) and s > 0 for s in stds
        ):
            raise ConfigError(
                f"Normalize needs finite means and finite stds > 0, got mean={means}, std={stds}"
            )
        self.register_buffer("mean", torch.tensor(means, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(stds, dtype=torch.float32))

    @property
    def num_channels(self) -> int:
        """Number of channels this normalization expects in dimension 1 of the input."""
        return int(self.mean.numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalize a batch; InputError unless dimension 1 has :attr:`num_channels` entries.

        Args:
            x: the batch ``(N, C, ...)``, in [0, 1] for lsakit's models.

        Returns:
            ``(x - mean) / std`` per channel, shaped like ``x``.
        """
        return normalized(x, self.mean, self.std)

    def extra_repr(self) -> str:
        """The constants, shown in the module's ``repr``.

        Returns:
            ``mean=(…), std=(…)``, each value to 4 significant digits.
        """
        mean = ", ".join(f"{m:.4g}" for m in self.mean.tolist())
        std = ", ".join(f"{s:.4g}" for s in self.std.tolist())
        return f"mean=({mean}), std=({std})"


def normalized(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` per channel (dimension 1) of a batch ``(N, C, ...)``."""
    channels = int(mean.numel())
    if x.dim() < 2 or x.shape[1] != channels:
        raise InputError(
            f"Normalize expects inputs (N, {channels}, ...), got shape {tuple(x.shape)}; check "
            "the model matches the data set's channels"
        )
    # Broadcast the per-channel constants over every dimension after the channel one.
    shape = (1, channels) + (1,) * (x.dim() - 2)
    return (x - mean.view(shape)) / std.view(shape)
