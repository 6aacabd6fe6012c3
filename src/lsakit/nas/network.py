"""The DARTS macro-architecture shared by the supernet and the discrete network.

DARTS (Liu et al., ICLR 2019, ``model_search.py`` / ``model.py``), as RACL uses it: a stem
(Conv 3×3 → BN, ``stem_multiplier · channels`` channels), then ``cells`` cells, each reading the
outputs of the two previous cells (s₀, s₁) after a pre-processing op (ReLU-Conv1×1-BN, or a
:class:`~lsakit.nas.ops.FactorizedReduce` when the previous cell halved the resolution), then a
global average pool and a linear classifier. A reduction cell doubles the channels and halves
the resolution (its edges from the two cell inputs have stride 2). The small MNIST variant uses
no reduction cells (``reductions=()``); :func:`darts_reductions` gives DARTS's positions.

The constant C of RACL's bound (λ_F ≲ C · Π_cells Π_nodes Σ β Σ α λ_o) is not specified by the
paper; here *(chosen)* ln C = ln λ_stem + Σ_cells ln max(λ_pre0, λ_pre1) + ln λ_pool + ln ‖W_fc‖₂:
every factor outside the cells' node sums, with each cell's two pre-processing ops entering by the
larger bound. C does not depend on the architecture parameters, so it shifts μ_F and ln λ̄_F alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lsakit.errors import ConfigError, InputError
from lsakit.nas.lipschitz import DEFAULT_POWER_ITERS, power_iteration_linear
from lsakit.nas.ops import (
    DEFAULT_POOL_BOUND,
    FactorizedReduce,
    LipschitzOp,
    PoolBound,
    PowerCache,
    Spatial,
    global_pool_lipschitz,
    module_lipschitz,
    relu_conv_bn,
)
from lsakit.validate import positive_int

#: DARTS's stem width factor (stem channels = 3 · C).
DEFAULT_STEM_MULTIPLIER = 3


def darts_reductions(cells: int) -> tuple[int, ...]:
    """DARTS's reduction-cell positions ``cells // 3`` and ``2 · cells // 3``; none below 3 cells.

    Args:
        cells: the number of cells (≥ 1).

    Returns:
        The reduction cells' indices, ascending (empty for fewer than 3 cells).
    """
    cells = positive_int(cells, "cells")
    return tuple(sorted({cells // 3, 2 * cells // 3})) if cells >= 3 else ()


def check_reductions(reductions: Sequence[int], cells: int) -> tuple[int, ...]:
    """Reduction positions: distinct cell indices in [0, cells)."""
    items = tuple(reductions)
    for r in items:
        if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < cells:
            raise ConfigError(f"reduction cell positions must lie in [0, {cells}), got {items!r}")
    if len(set(items)) != len(items):
        raise ConfigError(f"reduction cell positions listed twice: {items!r}")
    return tuple(sorted(items))


def reduced(size: Spatial) -> Spatial:
    """Spatial size after a reduction cell (⌈H/2⌉ × ⌈W/2⌉, the size every stride-2 op gives)."""
    return -(-size[0] // 2), -(-size[1] // 2)


def check_input_shape(input_shape: Sequence[int], in_channels: int) -> tuple[int, int, int]:
    """One sample's shape (C, H, W) with C = ``in_channels``."""
    shape = tuple(input_shape)
    if len(shape) != 3 or any(
        isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape
    ):
        raise InputError(f"input_shape must be (C, H, W) of positive ints, got {input_shape!r}")
    if shape[0] != in_channels:
        raise InputError(f"input_shape has {shape[0]} channels; the network takes {in_channels}")
    return shape[0], shape[1], shape[2]


class Cell(nn.Module, ABC):
    """What every cell has: the two pre-processing ops and its place in the network."""

    def __init__(
        self,
        prev_prev_channels: int,
        prev_channels: int,
        channels: int,
        *,
        reduction: bool,
        reduction_prev: bool,
        affine: bool,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.reduction_prev = reduction_prev
        self.preprocess0: LipschitzOp = (
            FactorizedReduce(prev_prev_channels, channels, affine=affine)
            if reduction_prev
            else relu_conv_bn(prev_prev_channels, channels, 1, affine=affine)
        )
        self.preprocess1: LipschitzOp = relu_conv_bn(prev_channels, channels, 1, affine=affine)

    @property
    @abstractmethod
    def multiplier(self) -> int:
        """Output channels / C: the number of concatenated nodes."""

    def preprocess_lipschitz(
        self,
        sizes: CellSizes,
        *,
        iters: int = DEFAULT_POWER_ITERS,
        pool_bound: PoolBound = DEFAULT_POOL_BOUND,
    ) -> Tensor:
        """max(λ_pre0, λ_pre1): the cell's factor of C (see the module notes)."""
        lam0, _ = module_lipschitz(self.preprocess0, sizes.s0, iters=iters, pool_bound=pool_bound)
        lam1, _ = module_lipschitz(self.preprocess1, sizes.s1, iters=iters, pool_bound=pool_bound)
        return torch.maximum(lam0, lam1.to(lam0))


@dataclass(frozen=True)
class CellSizes:
    """Spatial sizes around one cell: its raw inputs s₀, s₁ and its output."""

    s0: Spatial
    s1: Spatial
    out: Spatial


#: Builds cell ``index`` from (index, C_pp, C_p, C, reduction, reduction_prev).
CellFactory = Callable[[int, int, int, int, bool, bool], "Cell"]


class CellNetwork(nn.Module):
    """Stem → cells → global average pool → linear; subclasses build the cells.

    Subclasses call :meth:`_build` from their constructor with a cell factory.
    """

    stem: nn.Sequential
    cells: nn.ModuleList
    global_pool: nn.AdaptiveAvgPool2d
    classifier: nn.Linear

    def _build(
        self,
        make_cell: CellFactory,
        *,
        cells: int,
        channels: int,
        in_channels: int,
        num_classes: int,
        reductions: Sequence[int],
        stem_multiplier: int,
    ) -> None:
        cells = positive_int(cells, "cells")
        channels = positive_int(channels, "channels")
        self.in_channels = positive_int(in_channels, "in_channels")
        self.num_classes = positive_int(num_classes, "num_classes")
        stem_multiplier = positive_int(stem_multiplier, "stem_multiplier")
        self.reductions = check_reductions(reductions, cells)
        if self.reductions and channels % 2:
            raise ConfigError(
                f"channels must be even when the network has reduction cells, got {channels}"
            )
        c_stem = stem_multiplier * channels
        self._power_cache: PowerCache = {}
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem)
        )
        c_pp, c_p, c_cur = c_stem, c_stem, channels
        built: list[Cell] = []
        reduction_prev = False
        for i in range(cells):
            reduction = i in self.reductions
            if reduction:
                c_cur *= 2
            cell = make_cell(i, c_pp, c_p, c_cur, reduction, reduction_prev)
            built.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_cur
        self.cells = nn.ModuleList(built)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def _head(self, s1: Tensor) -> Tensor:
        logits: Tensor = self.classifier(self.global_pool(s1).flatten(1))
        return logits

    def cell_sizes(self, input_shape: Sequence[int]) -> list[CellSizes]:
        """Spatial sizes of every cell's inputs and output for inputs of shape (C, H, W)."""
        _, h, w = check_input_shape(input_shape, self.in_channels)
        s0: Spatial = (h, w)
        s1: Spatial = (h, w)
        sizes: list[CellSizes] = []
        for cell in self.cells:
            assert isinstance(cell, Cell)
            out = reduced(s1) if cell.reduction else s1
            sizes.append(CellSizes(s0, s1, out))
            s0, s1 = s1, out
        return sizes

    def log_constant(
        self,
        input_shape: Sequence[int],
        *,
        iters: int = DEFAULT_POWER_ITERS,
        pool_bound: PoolBound = DEFAULT_POOL_BOUND,
    ) -> Tensor:
        """ln C: stem, each cell's larger pre-processing bound, global pool and classifier."""
        _, h, w = check_input_shape(input_shape, self.in_channels)
        sizes = self.cell_sizes(input_shape)
        lam_stem, _ = module_lipschitz(
            self.stem, (h, w), iters=iters, pool_bound=pool_bound, cache=self._power_cache
        )
        logs = [lam_stem.log()]
        for cell, size in zip(self.cells, sizes, strict=True):
            assert isinstance(cell, Cell)
            logs.append(cell.preprocess_lipschitz(size, iters=iters, pool_bound=pool_bound).log())
        final = sizes[-1].out
        logs.append(global_pool_lipschitz(final, pool_bound=pool_bound).log())
        logs.append(power_iteration_linear(self.classifier.weight.detach(), iters).log())
        device = lam_stem.device
        return torch.stack([v.to(device=device, dtype=torch.float32) for v in logs]).sum()


__all__ = [
    "DEFAULT_STEM_MULTIPLIER",
    "Cell",
    "CellNetwork",
    "CellSizes",
    "check_input_shape",
    "check_reductions",
    "darts_reductions",
    "reduced",
]
