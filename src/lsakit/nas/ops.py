"""Candidate operations of the RACL search space, each with its Lipschitz bound λ_o.

RACL (Dong et al., arXiv:2009.00902) searches a DARTS cell (Liu et al., ICLR 2019) whose edges mix
candidate ops; its Lipschitz bound multiplies per-op constants λ_o. The ops follow DARTS's
``operations.py`` (ReLU → Conv → BN ordering; BN without affine parameters inside the supernet):

==================  =====================================================  ==========================
name                layers                                                 λ_o
==================  =====================================================  ==========================
``none``            zero (stride 2: zero at the reduced size)              0
``skip_connect``    identity; stride 2: :class:`FactorizedReduce`          1; max_k σ_k·BN_k
``max_pool_3x3``    MaxPool 3×3, padding 1 (+ BN in the supernet)          pool bound (below)·BN
``avg_pool_3x3``    AvgPool 3×3, padding 1, count_include_pad=False (+BN)  pool bound (below)·BN
``conv_3x3``        ReLU, Conv 3×3, BN                                     σ(conv)·BN
``sep_conv_3x3``    2 × (ReLU, depthwise 3×3, pointwise 1×1, BN)           Π σ(conv) · Π BN
``sep_conv_5x5``    the same with 5×5 depthwise convs                      Π σ(conv) · Π BN
``dil_conv_3x3``    ReLU, depthwise 3×3 dilation 2, pointwise 1×1, BN      Π σ(conv) · BN
``dil_conv_5x5``    ReLU, depthwise 5×5 dilation 2, pointwise 1×1, BN      Π σ(conv) · BN
==================  =====================================================  ==========================

The small search space (:data:`SMALL_SEARCH_OPS`) is the first six; the paper's eight
(:data:`DARTS_OPS`) replace ``conv_3x3`` by the 5×5 and dilated convs. Every op takes a stride
(1, or 2 in a reduction cell); the small MNIST variant uses normal cells only (plus the stem).

λ_o of a chain of layers is the product of the layers' bounds (Lipschitz constants compose):
ReLU 1; a convolution its spectral norm, by power iteration on the actual ``conv2d`` at the input
size it sees (:func:`~lsakit.nas.lipschitz.power_iteration_conv`); BatchNorm (eval mode, running
statistics) max|γ|/√(var + ε) (:func:`~lsakit.nas.lipschitz.batchnorm_factor`). The weights are
the current ones; λ_o is a constant (no gradient), as in the paper.

Pooling, two conventions (``pool_bound``) — the paper uses 1 for both pools, which is not an ℓ₂
bound here, so the exact ℓ₂ values are available too *(derived here)*:

* ``"paper"`` (default): max-pool 1, avg-pool 1, global average pool 1 — the paper's λ_o.
* ``"l2"``: the ℓ₂ Lipschitz constants of the actual layers. Max-pool: a pixel that lies in k
  windows can move k outputs by as much as itself, so λ = √(max windows per pixel) — 3 for
  3×3/stride 1 (9 windows), 2 for stride 2 (4 windows); tight (a single-pixel bump attains it).
  Avg-pool with ``count_include_pad=False`` is the linear map y_p = (1/n_p) Σ_{q∈N(p)} x_q with
  n_p ∈ {4, 6, 9} in-bounds neighbours. Its rows sum to 1 (‖A‖_∞ = 1) but near a corner a column
  sums to 1/4 + 4/6 + 4/9 = 49/36, so ‖A‖₂ ≤ √(‖A‖₁‖A‖_∞) = 7/6 only, and ‖A‖₂ is in fact
  slightly above 1 (1.0051 at 28×28, 1.0286 at 4×4; stride 2: 0.619 at 28×28). It is computed
  exactly: the in-bounds window is a rectangle, so the operator is the Kronecker product of two
  1-D averaging matrices and its norm the product of theirs. The global average pool over H×W
  is 1/√(HW).

A cached power-iteration vector per convolution and input size warm-starts the next estimate
(the weights change little between search steps); a cold start always runs at least
:data:`~lsakit.nas.lipschitz.DEFAULT_POWER_ITERS` steps.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lsakit._torch import model_device
from lsakit.errors import ConfigError
from lsakit.nas.lipschitz import (
    DEFAULT_POWER_ITERS,
    batchnorm_factor,
    conv_output_size,
    power_iteration_conv_vector,
)
from lsakit.validate import choice, positive_int, spatial

PoolBound = Literal["paper", "l2"]
POOL_BOUNDS: tuple[str, ...] = get_args(PoolBound)

#: Default pooling convention: the paper's λ_o (see the module docstring).
DEFAULT_POOL_BOUND: PoolBound = "paper"

#: The small search space of the faithful MNIST variant (spec part A).
SMALL_SEARCH_OPS: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "conv_3x3",
    "sep_conv_3x3",
)

#: DARTS's eight primitives, the paper's search space.
DARTS_OPS: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

#: Every op name the builders know.
OP_NAMES: tuple[str, ...] = (*DARTS_OPS, "conv_3x3")

Spatial = tuple[int, int]
#: Warm-start vectors of the power iterations of one op, by layer and input size.
PowerCache = dict[str, Tensor]


def _one(device: torch.device | None = None) -> Tensor:
    return torch.ones((), device=device)


# --------------------------------------------------------------------------------------------
# Bounds of plain layers
# --------------------------------------------------------------------------------------------


def _as_pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[-1])


def pool_output_spatial(pool: nn.MaxPool2d | nn.AvgPool2d, size: Spatial) -> Spatial:
    """Output (H, W) of a pooling layer (floor mode, as built here)."""
    k, s, p = _as_pair(pool.kernel_size), _as_pair(pool.stride), _as_pair(pool.padding)
    return (
        conv_output_size(size[0], k[0], s[0], p[0]),
        conv_output_size(size[1], k[1], s[1], p[1]),
    )


def max_windows_per_pixel(size: int, kernel: int, stride: int, padding: int) -> int:
    """Largest number of pooling windows (along one axis) that contain the same input index."""
    out = conv_output_size(size, kernel, stride, padding)
    counts = [0] * size
    for o in range(out):
        start = o * stride - padding
        for i in range(max(start, 0), min(start + kernel, size)):
            counts[i] += 1
    return max(counts)


def avg_pool_axis_matrix(
    size: int, kernel: int, stride: int, padding: int, *, count_include_pad: bool
) -> Tensor:
    """The 1-D average-pooling operator along one axis as an explicit (out, size) matrix."""
    eye = torch.eye(size, dtype=torch.float64).unsqueeze(1)  # (size, 1, size): unit impulses
    out = F.avg_pool1d(eye, kernel, stride, padding, count_include_pad=count_include_pad)
    return out.squeeze(1).T


def pool_lipschitz(
    pool: nn.MaxPool2d | nn.AvgPool2d,
    size: Spatial,
    *,
    pool_bound: PoolBound = DEFAULT_POOL_BOUND,
) -> Tensor:
    """λ of a max or average pooling layer on (H, W) inputs under a convention (module notes).

    ``"l2"`` is exact: for max pooling √(max windows per pixel); average pooling over a window
    whose in-bounds part is a rectangle divides by (rows in bounds)·(columns in bounds), so the
    2-D operator is the Kronecker product of two 1-D ones and ‖A‖₂ = ‖A_H‖₂ · ‖A_W‖₂, each
    from an explicit small matrix.
    """
    pool_bound = _pool_bound(pool_bound)
    if pool_bound == "paper":
        return _one()
    k, s, p = _as_pair(pool.kernel_size), _as_pair(pool.stride), _as_pair(pool.padding)
    if isinstance(pool, nn.MaxPool2d):
        windows = max_windows_per_pixel(size[0], k[0], s[0], p[0]) * max_windows_per_pixel(
            size[1], k[1], s[1], p[1]
        )
        return torch.tensor(math.sqrt(windows))
    norm = 1.0
    for axis in range(2):
        matrix = avg_pool_axis_matrix(
            size[axis], k[axis], s[axis], p[axis], count_include_pad=pool.count_include_pad
        )
        norm *= float(torch.linalg.matrix_norm(matrix, ord=2))
    return torch.tensor(norm)


def global_pool_lipschitz(size: Spatial, *, pool_bound: PoolBound = DEFAULT_POOL_BOUND) -> Tensor:
    """λ of a global average pool over (H, W): 1 (paper) or 1/√(HW) (ℓ₂, exact)."""
    if _pool_bound(pool_bound) == "paper":
        return _one()
    return torch.tensor(1.0 / math.sqrt(size[0] * size[1]))


def _pool_bound(value: object) -> PoolBound:
    choice(value, "pool_bound", POOL_BOUNDS)
    return "paper" if value == "paper" else "l2"


def conv_lipschitz(
    conv: nn.Conv2d,
    size: Spatial,
    *,
    iters: int = DEFAULT_POWER_ITERS,
    cache: PowerCache | None = None,
    key: str = "",
) -> Tensor:
    """Spectral norm of ``conv`` on inputs (C_in, H, W), warm-started from ``cache[key@HxW]``."""
    if not isinstance(conv.padding, tuple):
        raise ConfigError(f"conv padding {conv.padding!r} is not supported; use explicit ints")
    slot = f"{key}@{size[0]}x{size[1]}"
    init = None if cache is None else cache.get(slot)
    steps = iters if init is not None else max(iters, DEFAULT_POWER_ITERS)
    sigma, vector = power_iteration_conv_vector(
        conv.weight.detach(),
        (conv.in_channels, *size),
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        iters=steps,
        init=init,
    )
    if cache is not None:
        cache[slot] = vector
    return sigma


def module_lipschitz(
    module: nn.Module,
    size: Spatial,
    *,
    iters: int = DEFAULT_POWER_ITERS,
    pool_bound: PoolBound = DEFAULT_POOL_BOUND,
    cache: PowerCache | None = None,
    key: str = "",
) -> tuple[Tensor, Spatial]:
    """Lipschitz bound of a layer or a chain of layers on (H, W) inputs, and the output (H, W).

    Knows :class:`LipschitzOp`, ``nn.Sequential`` (product over the children, tracking the
    spatial size), ``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.ReLU``, ``nn.Identity`` and the two
    poolings; anything else raises ConfigError.
    """
    if isinstance(module, LipschitzOp):
        return module.lipschitz(size, iters=iters, pool_bound=pool_bound), module.output_spatial(
            size
        )
    if isinstance(module, nn.Sequential):
        # The product lives on the chain's device (a parameter-free chain: the CPU).
        total = _one(model_device(module))
        for name, child in module.named_children():
            lam, size = module_lipschitz(
                child, size, iters=iters, pool_bound=pool_bound, cache=cache, key=f"{key}.{name}"
            )
            total = total * lam.to(total)
        return total, size
    if isinstance(module, nn.Conv2d):
        k = _as_pair(module.kernel_size)
        s, d = _as_pair(module.stride), _as_pair(module.dilation)
        p = _as_pair(module.padding) if isinstance(module.padding, tuple) else (0, 0)
        out = (
            conv_output_size(size[0], k[0], s[0], p[0], d[0]),
            conv_output_size(size[1], k[1], s[1], p[1], d[1]),
        )
        return conv_lipschitz(module, size, iters=iters, cache=cache, key=key), out
    if isinstance(module, nn.BatchNorm2d):
        return batchnorm_factor(module), size
    if isinstance(module, (nn.ReLU, nn.Identity)):
        return _one(), size
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        lam = pool_lipschitz(module, size, pool_bound=pool_bound)
        return lam, pool_output_spatial(module, size)
    raise ConfigError(f"no Lipschitz bound is known for {type(module).__name__}")


# --------------------------------------------------------------------------------------------
# The ops
# --------------------------------------------------------------------------------------------


class LipschitzOp(nn.Module, ABC):
    """A candidate op that knows its Lipschitz bound λ_o on inputs of a given spatial size."""

    def __init__(self) -> None:
        super().__init__()
        self._power_cache: PowerCache = {}

    @abstractmethod
    def lipschitz(
        self,
        size: Spatial,
        *,
        iters: int = DEFAULT_POWER_ITERS,
        pool_bound: PoolBound = DEFAULT_POOL_BOUND,
    ) -> Tensor:
        """λ_o on inputs of spatial size ``size`` = (H, W) (a 0-d tensor, no gradient)."""

    @abstractmethod
    def output_spatial(self, size: Spatial) -> Spatial:
        """The output (H, W) for inputs of spatial size ``size``."""


class Zero(LipschitzOp):
    """The ``none`` op: zeros (at the strided size), λ = 0."""

    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)

    def lipschitz(
        self,
        size: Spatial,
        *,
        iters: int = DEFAULT_POWER_ITERS,
        pool_bound: PoolBound = DEFAULT_POOL_BOUND,
    ) -> Tensor:
        return torch.zeros(())

    def output_spatial(self, size: Spatial) -> Spatial:
        return -(-size[0] // self.stride), -(-size[1] // self.stride)


class Skip(LipschitzOp):
    """The ``skip_connect`` op at stride 1: the identity, λ = 1."""

    def forward(self, x: Tensor) -> Tensor:
        return x

    def lipschitz(
        self,
        size: Spatial,
        *,
        iters: int = DEFAULT_POWER_ITERS,
        pool_bound: PoolBound = DEFAULT_POOL_BOUND,
    ) -> Tensor:
        return _one()

    def output_spatial(self, size: Spatial) -> Spatial:
        return size


class FactorizedReduce(LipschitzOp):
    """DARTS's stride-2 skip: ReLU, two 1×1 stride-2 convs on the even and odd pixel grids, BN.

    The odd grid is read after padding one zero row and column at the bottom/right, so odd input
    sizes work too (DARTS's version fails there); both halves give ⌈H/2⌉ × ⌈W/2⌉.
    λ = max(σ₁·BN₁, σ₂·BN₂), BN_k the BN factor over block k's channels: the two convs read
    disjoint pixels and write disjoint channels, so the operator (BN included) is block diagonal
    and its norm is the larger block norm, each bounded by conv norm × BN factor.
    """

    def __init__(self, in_channels: int, out_channels: int, *, affine: bool = True) -> None:
        super().__init__()
        if out_channels % 2:
            raise ConfigError(
                f"FactorizedReduce needs an even number of output channels, got {out_channels}"
            )
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(in_channels, out_channels // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(in_channels, out_channels // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        out: Tensor = self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))
        return out

    def lipschitz(
        self,
        size: Spatial,
        *,
        iters: int = DEFAULT_POWER_ITERS,
        pool_bound: PoolBound = DEFAULT_POOL_BOUND,
    ) -> Tensor:
        sigma_1 = conv_lipschitz(self.conv_1, size, iters=iters, cache=self._power_cache, key="1")
        sigma_2 = conv_lipschitz(self.conv_2, size, iters=iters, cache=self._power_cache, key="2")
        half = self.conv_1.out_channels
        bn_1 = batchnorm_factor(self.bn, channels=slice(0, half)).to(sigma_1)
        bn_2 = batchnorm_factor(self.bn, channels=slice(half, None)).to(sigma_1)
        return torch.maximum(sigma_1 * bn_1, sigma_2 * bn_2)

    def output_spatial(self, size: Spatial) -> Spatial:
        return -(-size[0] // 2), -(-size[1] // 2)


class ChainOp(LipschitzOp):
    """An op that is a chain of plain layers (``self.layers``); λ is the product of theirs."""

    def __init__(self, layers: nn.Sequential) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.layers(x)
        return out

    def lipschitz(
        self,
        size: Spatial,
        *,
        iters: int = DEFAULT_POWER_ITERS,
        pool_bound: PoolBound = DEFAULT_POOL_BOUND,
    ) -> Tensor:
        lam, _ = module_lipschitz(
            self.layers, size, iters=iters, pool_bound=pool_bound, cache=self._power_cache
        )
        return lam

    def output_spatial(self, size: Spatial) -> Spatial:
        for child in self.layers:
            if isinstance(child, nn.Conv2d):
                k, s = _as_pair(child.kernel_size), _as_pair(child.stride)
                d = _as_pair(child.dilation)
                p = _as_pair(child.padding) if isinstance(child.padding, tuple) else (0, 0)
                size = (
                    conv_output_size(size[0], k[0], s[0], p[0], d[0]),
                    conv_output_size(size[1], k[1], s[1], p[1], d[1]),
                )
            elif isinstance(child, (nn.MaxPool2d, nn.AvgPool2d)):
                size = pool_output_spatial(child, size)
        return size


def relu_conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int = 1,
    padding: int = 0,
    affine: bool = True,
) -> ChainOp:
    """ReLU → Conv(k, stride, padding, no bias) → BN (``conv_3x3`` and the cell pre-processing)."""
    return ChainOp(
        nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=False),
            nn.BatchNorm2d(out_channels, affine=affine),
        )
    )


def dil_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int,
    padding: int,
    dilation: int,
    affine: bool = True,
) -> ChainOp:
    """DARTS DilConv: ReLU → depthwise k×k (dilated) → pointwise 1×1 → BN."""
    return ChainOp(
        nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                in_channels,
                in_channels,
                kernel_size,
                stride,
                padding,
                dilation=dilation,
                groups=in_channels,
                bias=False,
            ),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels, affine=affine),
        )
    )


def sep_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    stride: int,
    padding: int,
    affine: bool = True,
) -> ChainOp:
    """DARTS SepConv: two (ReLU → depthwise k×k → pointwise 1×1 → BN), the first strided."""

    def half(c_in: int, c_out: int, s: int) -> list[nn.Module]:
        return [
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel_size, s, padding, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        ]

    return ChainOp(
        nn.Sequential(*half(in_channels, in_channels, stride), *half(in_channels, out_channels, 1))
    )


def pool_op(kind: Literal["max", "avg"], *, stride: int, bn_channels: int | None) -> ChainOp:
    """3×3 max or average pooling (padding 1; avg without the padding in the count), + BN."""
    pool: nn.Module = (
        nn.MaxPool2d(3, stride=stride, padding=1)
        if kind == "max"
        else nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    )
    layers: list[nn.Module] = [pool]
    if bn_channels is not None:
        layers.append(nn.BatchNorm2d(bn_channels, affine=False))
    return ChainOp(nn.Sequential(*layers))


OpBuilder = Callable[[int, int, bool, bool], LipschitzOp]

_BUILDERS: dict[str, OpBuilder] = {
    "none": lambda c, s, affine, pool_bn: Zero(s),
    "max_pool_3x3": lambda c, s, affine, pool_bn: pool_op(
        "max", stride=s, bn_channels=c if pool_bn else None
    ),
    "avg_pool_3x3": lambda c, s, affine, pool_bn: pool_op(
        "avg", stride=s, bn_channels=c if pool_bn else None
    ),
    "skip_connect": lambda c, s, affine, pool_bn: (
        Skip() if s == 1 else FactorizedReduce(c, c, affine=affine)
    ),
    "conv_3x3": lambda c, s, affine, pool_bn: relu_conv_bn(
        c, c, 3, stride=s, padding=1, affine=affine
    ),
    "sep_conv_3x3": lambda c, s, affine, pool_bn: sep_conv(
        c, c, 3, stride=s, padding=1, affine=affine
    ),
    "sep_conv_5x5": lambda c, s, affine, pool_bn: sep_conv(
        c, c, 5, stride=s, padding=2, affine=affine
    ),
    "dil_conv_3x3": lambda c, s, affine, pool_bn: dil_conv(
        c, c, 3, stride=s, padding=2, dilation=2, affine=affine
    ),
    "dil_conv_5x5": lambda c, s, affine, pool_bn: dil_conv(
        c, c, 5, stride=s, padding=4, dilation=2, affine=affine
    ),
}


def build_op(
    name: str, channels: int, *, stride: int = 1, affine: bool = True, pool_bn: bool = False
) -> LipschitzOp:
    """Build the op ``name`` on ``channels`` channels (in = out).

    Args:
        name: one of :data:`OP_NAMES`.
        channels: input and output channels.
        stride: 1, or 2 in a reduction cell (for edges from the cell inputs).
        affine: BN with learnable γ, β (the discrete network) or without (the supernet, as DARTS).
        pool_bn: append a BN without affine parameters to the poolings (DARTS's MixedOp does, so
            the pooled branch has the scale of the others).

    Returns:
        A new :class:`LipschitzOp` mapping ``(N, channels, H, W)`` to ``(N, channels, H, W)``
        at stride 1 and to ``(N, channels, ⌈H/2⌉, ⌈W/2⌉)`` at stride 2.
    """
    choice(name, "op", OP_NAMES)
    channels = positive_int(channels, "channels")
    if stride not in (1, 2):
        raise ConfigError(f"stride must be 1 or 2, got {stride!r}")
    return _BUILDERS[name](channels, stride, affine, pool_bn)


def lipschitz(
    op: nn.Module,
    size: Sequence[int],
    *,
    iters: int = DEFAULT_POWER_ITERS,
    pool_bound: PoolBound = DEFAULT_POOL_BOUND,
) -> Tensor:
    """λ_o of an op (or any chain :func:`module_lipschitz` knows) on inputs of size (H, W).

    Args:
        op: a :class:`LipschitzOp` (e.g. from :func:`build_op`) or a layer or ``nn.Sequential``
            of layers :func:`module_lipschitz` knows (else ConfigError).
        size: the spatial size (H, W) of the op's inputs, two ints ≥ 1.
        iters: power-iteration steps per convolution; one without a warm-start vector (cached
            in a :class:`LipschitzOp` by an earlier call) runs at least
            :data:`~lsakit.nas.lipschitz.DEFAULT_POWER_ITERS`.
        pool_bound: ``"paper"`` (every pooling counts 1) or ``"l2"`` (exact ℓ₂ constants); see
            the module docstring.

    Returns:
        λ_o, a 0-d tensor without gradient, computed with the op's current weights.
    """
    lam, _ = module_lipschitz(op, spatial(size, "size"), iters=iters, pool_bound=pool_bound)
    return lam


__all__ = [
    "DARTS_OPS",
    "DEFAULT_POOL_BOUND",
    "OP_NAMES",
    "POOL_BOUNDS",
    "SMALL_SEARCH_OPS",
    "ChainOp",
    "FactorizedReduce",
    "LipschitzOp",
    "PoolBound",
    "PowerCache",
    "Skip",
    "Zero",
    "avg_pool_axis_matrix",
    "build_op",
    "conv_lipschitz",
    "dil_conv",
    "global_pool_lipschitz",
    "lipschitz",
    "max_windows_per_pixel",
    "module_lipschitz",
    "pool_lipschitz",
    "pool_op",
    "relu_conv_bn",
    "sep_conv",
]
