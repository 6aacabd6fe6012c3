"""The RACL supernet: a DARTS cell whose architecture weights are log-normal confidences.

RACL (Dong et al., arXiv:2009.00902) replaces DARTS's softmax weights by random confidences:
intermediate node j of a cell computes

    I^(j) = Σ_{i<j} β^(i,j) Σ_{o∈O} α_o^(i,j) · o(I^(i)),   α ~ LN(μ_α, σ_α²), β ~ LN(μ_β, σ_β²),

with σ = softplus(ρ) and the reparameterized samples α = exp(μ + σ·ε), ε ~ N(0, 1), so gradients
reach μ and ρ. In training mode every forward draws one ε per edge and op (shared by the batch
and by all cells of one type); in eval mode the median exp(μ) is used. As in DARTS, one set of
(μ, ρ) is shared by all normal cells and one by all reduction cells, and the ops' BatchNorms have
no affine parameters.

:meth:`Supernet.weights` and :meth:`Supernet.arch_parameters` are disjoint parameter lists for the
two optimizers. :meth:`Supernet.lipschitz_lognormal` gives (μ_F, σ_F) of the network bound
(:func:`~lsakit.nas.lipschitz.network_lognormal`), differentiable in μ and ρ.

Choices where the paper is silent *(inferred)*:

* the confidences are not normalized (no softmax: α and β are the weights themselves), and are
  initialized to the DARTS uniform point, median α = 1/|O| and median β = 1/(j + 2), with a
  1e-3·N(0, 1) jitter on μ_α as DARTS's α init, and σ = ``sigma_init`` (0.1) everywhere;
* the ``none`` op is not evaluated (its term is exactly 0, so neither the output nor any
  gradient changes);
* cells of one type share the same sample (DARTS's weight sharing), which is why
  :func:`~lsakit.nas.lipschitz.network_lognormal` treats them as correlated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lsakit._torch import model_device
from lsakit.errors import ConfigError
from lsakit.nas.lipschitz import (
    DEFAULT_POWER_ITERS,
    CellDistribution,
    edges_per_cell,
    network_lognormal,
    node_edge_slices,
)
from lsakit.nas.network import DEFAULT_STEM_MULTIPLIER, Cell, CellNetwork, CellSizes
from lsakit.nas.ops import (
    DEFAULT_POOL_BOUND,
    OP_NAMES,
    SMALL_SEARCH_OPS,
    LipschitzOp,
    PoolBound,
    Zero,
    build_op,
    module_lipschitz,
)
from lsakit.validate import number, positive_int

#: Initial σ of every confidence (not published).
DEFAULT_SIGMA_INIT = 0.1

#: Std of DARTS's random jitter on the initial architecture logits.
_INIT_JITTER = 1e-3

#: The architecture of one forward: cell type ("normal" / "reduce") → (α (E, O), β (E,)).
Architecture = Mapping[str, tuple[Tensor, Tensor]]


def inverse_softplus(value: float) -> float:
    """ρ with softplus(ρ) = value (> 0): ln(e^value − 1)."""
    value = number(value, "sigma", low=0.0, strict=True)
    return math.log(math.expm1(value))


class LogNormalParameter(nn.Module):
    """A tensor of log-normal confidences LN(μ, σ²), σ = softplus(ρ), μ and ρ learnable.

    Args:
        mu: initial μ (any shape).
        sigma: initial σ > 0 of every entry.

    ``forward()`` returns a reparameterized sample exp(μ + σ·ε) in training mode and the median
    exp(μ) in eval mode.
    """

    def __init__(self, mu: Tensor, *, sigma: float = DEFAULT_SIGMA_INIT) -> None:
        super().__init__()
        self.mu = nn.Parameter(mu.detach().clone())
        self.rho = nn.Parameter(torch.full_like(self.mu, inverse_softplus(sigma)))

    @property
    def sigma(self) -> Tensor:
        """σ = softplus(ρ) (differentiable)."""
        return F.softplus(self.rho)

    def sample(self, noise: Tensor | None = None) -> Tensor:
        """exp(μ + σ·ε) with ε ~ N(0, 1) (global torch RNG) unless ``noise`` is given.

        Args:
            noise: ε, shaped like μ (default: a fresh standard normal draw).

        Returns:
            The sample, shaped like μ, differentiable in μ and ρ.
        """
        eps = torch.randn_like(self.mu) if noise is None else noise
        return torch.exp(self.mu + self.sigma * eps)

    def median(self) -> Tensor:
        """exp(μ), the median of the log-normal.

        Returns:
            exp(μ), shaped like μ, differentiable in μ.
        """
        return torch.exp(self.mu)

    def lower_bound(self, z: float) -> Tensor:
        """exp(μ − z·σ): the Φ(−z) quantile, a confidence lower bound for z > 0.

        Args:
            z: how many σ below μ, in log space (e.g. Φ⁻¹(0.9) ≈ 1.2816).

        Returns:
            exp(μ − z·σ), shaped like μ, differentiable in μ and ρ.
        """
        return torch.exp(self.mu - z * self.sigma)

    def forward(self) -> Tensor:
        """A sample in training mode, the median in eval mode.

        Returns:
            :meth:`sample` (fresh ε) in training mode, :meth:`median` in eval mode; shaped like
            μ.
        """
        return self.sample() if self.training else self.median()


class MixedOp(nn.Module):
    """One edge: Σ_o α_o · o(x) over the candidate ops (built with supernet settings)."""

    def __init__(self, channels: int, stride: int, op_names: Sequence[str]) -> None:
        super().__init__()
        self.op_names = tuple(op_names)
        self.ops = nn.ModuleList(
            build_op(name, channels, stride=stride, affine=False, pool_bn=True)
            for name in self.op_names
        )

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        # The supernet always has a non-zero op (checked), so the sum is never empty.
        terms = [
            w * op(x) for w, op in zip(weights, self.ops, strict=True) if not isinstance(op, Zero)
        ]
        return torch.stack(terms).sum(0)


class SearchCell(Cell):
    """A supernet cell: ``nodes`` intermediate nodes, each a β-weighted sum of mixed edges."""

    def __init__(
        self,
        prev_prev_channels: int,
        prev_channels: int,
        channels: int,
        *,
        nodes: int,
        op_names: Sequence[str],
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__(
            prev_prev_channels,
            prev_channels,
            channels,
            reduction=reduction,
            reduction_prev=reduction_prev,
            affine=False,
        )
        self.nodes = nodes
        self.edge_inputs: list[int] = [i for j in range(nodes) for i in range(j + 2)]
        self.edges = nn.ModuleList(
            MixedOp(channels, 2 if reduction and i < 2 else 1, op_names) for i in self.edge_inputs
        )

    @property
    def multiplier(self) -> int:
        return self.nodes

    def forward(self, s0: Tensor, s1: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for sl in node_edge_slices(self.nodes):
            terms = [
                beta[e] * self.edges[e](states[self.edge_inputs[e]], alpha[e])
                for e in range(sl.start, sl.stop)
            ]
            states.append(torch.stack(terms).sum(0))
        return torch.cat(states[2:], dim=1)

    def edge_lipschitz(
        self,
        sizes: CellSizes,
        *,
        iters: int = DEFAULT_POWER_ITERS,
        pool_bound: PoolBound = DEFAULT_POOL_BOUND,
    ) -> Tensor:
        """λ_o of every edge and op, (E, O) (no gradient; edges from the cell inputs see s₁'s size)."""
        rows = []
        for e, edge in enumerate(self.edges):
            assert isinstance(edge, MixedOp)
            size = sizes.s1 if self.edge_inputs[e] < 2 else sizes.out
            row = []
            for op in edge.ops:
                assert isinstance(op, LipschitzOp)
                lam, _ = module_lipschitz(op, size, iters=iters, pool_bound=pool_bound)
                row.append(lam)
            rows.append(row)
        device = model_device(self)
        return torch.stack([torch.stack([v.to(device) for v in row]) for row in rows])


@dataclass(frozen=True)
class LipschitzConstants:
    """The architecture-independent inputs of the bound: ln C and λ_o per cell, (E, O) each."""

    log_c: Tensor
    lam: list[Tensor]


class Supernet(CellNetwork):
    """The DARTS-style RACL supernet (see the module docstring).

    Args:
        cells: number of cells.
        nodes: intermediate nodes per cell (node j has j + 2 inputs).
        channels: C, the channels of the first cells' nodes.
        in_channels: input image channels (1 for MNIST).
        num_classes: number of logits.
        ops: candidate op names (default :data:`~lsakit.nas.ops.SMALL_SEARCH_OPS`).
        reductions: indices of reduction cells (default none: normal cells and the stem only).
        stem_multiplier: stem channels = stem_multiplier · C (DARTS: 3).
        sigma_init: initial σ of every confidence.

    Example::

        net = Supernet(cells=2, nodes=3, channels=8)
        logits = net(x)                                   # samples α, β in training mode
        mu_f, sigma_f = net.lipschitz_lognormal(net.lipschitz_constants((1, 28, 28)))
    """

    def __init__(
        self,
        *,
        cells: int = 2,
        nodes: int = 3,
        channels: int = 8,
        in_channels: int = 1,
        num_classes: int = 10,
        ops: Sequence[str] = SMALL_SEARCH_OPS,
        reductions: Sequence[int] = (),
        stem_multiplier: int = DEFAULT_STEM_MULTIPLIER,
        sigma_init: float = DEFAULT_SIGMA_INIT,
    ) -> None:
        super().__init__()
        self.op_names = _check_ops(ops)
        self.nodes = positive_int(nodes, "nodes")
        self._build(
            self._make_cell,
            cells=cells,
            channels=channels,
            in_channels=in_channels,
            num_classes=num_classes,
            reductions=reductions,
            stem_multiplier=stem_multiplier,
        )
        n_edges, n_ops = edges_per_cell(self.nodes), len(self.op_names)
        beta_mu = torch.tensor([-math.log(j + 2) for j in range(self.nodes) for _ in range(j + 2)])
        arch: dict[str, nn.Module] = {}
        for kind in self.cell_types:
            alpha_mu = torch.full((n_edges, n_ops), -math.log(n_ops))
            alpha_mu += _INIT_JITTER * torch.randn(n_edges, n_ops)
            arch[f"{kind}_alpha"] = LogNormalParameter(alpha_mu, sigma=sigma_init)
            arch[f"{kind}_beta"] = LogNormalParameter(beta_mu, sigma=sigma_init)
        self.arch = nn.ModuleDict(arch)

    def _make_cell(
        self, index: int, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool
    ) -> Cell:
        return SearchCell(
            c_pp,
            c_p,
            c,
            nodes=self.nodes,
            op_names=self.op_names,
            reduction=reduction,
            reduction_prev=reduction_prev,
        )

    # -- architecture ------------------------------------------------------------------------------
    @property
    def cell_types(self) -> tuple[str, ...]:
        """("normal",) or ("normal", "reduce") when the network has reduction cells."""
        return ("normal", "reduce") if self.reductions else ("normal",)

    def alpha(self, kind: str = "normal") -> LogNormalParameter:
        """The α confidences (E, O) of a cell type.

        Args:
            kind: ``"normal"``, or ``"reduce"`` in a network with reduction cells.

        Returns:
            The :class:`LogNormalParameter` holding μ and ρ of shape (E, O), E edges per cell
            and O candidate ops, shared by every cell of that type.
        """
        module = self.arch[f"{kind}_alpha"]
        assert isinstance(module, LogNormalParameter)
        return module

    def beta(self, kind: str = "normal") -> LogNormalParameter:
        """The β confidences (E,) of a cell type.

        Args:
            kind: ``"normal"``, or ``"reduce"`` in a network with reduction cells.

        Returns:
            The :class:`LogNormalParameter` holding μ and ρ of shape (E,), shared by every cell
            of that type.
        """
        module = self.arch[f"{kind}_beta"]
        assert isinstance(module, LogNormalParameter)
        return module

    def arch_parameters(self) -> list[nn.Parameter]:
        """μ and ρ of every α and β (for the architecture optimizer).

        Returns:
            The architecture parameters, disjoint from :meth:`weights`.
        """
        return list(self.arch.parameters())

    def weights(self) -> list[nn.Parameter]:
        """Every other parameter: stem, ops, pre-processing, classifier (for the SGD optimizer).

        Returns:
            Every parameter not in :meth:`arch_parameters`, in ``parameters()`` order.
        """
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def sample_architecture(self) -> dict[str, tuple[Tensor, Tensor]]:
        """One (α, β) per cell type: samples in training mode, medians in eval mode.

        Returns:
            ``{kind: (α (E, O), β (E,))}`` for each of :attr:`cell_types`, differentiable in
            the architecture parameters.
        """
        return {kind: (self.alpha(kind)(), self.beta(kind)()) for kind in self.cell_types}

    def forward(self, x: Tensor, architecture: Architecture | None = None) -> Tensor:
        """Stem, cells weighted by the architecture's α and β, global average pool, classifier.

        Args:
            x: a batch ``(N, in_channels, H, W)``.
            architecture: ``{kind: (α (E, O), β (E,))}`` for each cell type, as
                :meth:`sample_architecture` returns; default: one fresh
                :meth:`sample_architecture` (shared by all cells of a type and the batch).

        Returns:
            The logits, ``(N, num_classes)``.
        """
        weights = self.sample_architecture() if architecture is None else architecture
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            assert isinstance(cell, SearchCell)
            alpha, beta = weights["reduce" if cell.reduction else "normal"]
            s0, s1 = s1, cell(s0, s1, alpha, beta)
        return self._head(s1)

    # -- the Lipschitz bound -----------------------------------------------------------------------
    def lipschitz_constants(
        self,
        input_shape: Sequence[int],
        *,
        iters: int = DEFAULT_POWER_ITERS,
        pool_bound: PoolBound = DEFAULT_POOL_BOUND,
    ) -> LipschitzConstants:
        """ln C and every cell's λ_o (E, O) for inputs of shape (C, H, W), with the current weights.

        Power iterations are warm-started from the previous call's vectors (``iters`` steps; a
        first call runs at least :data:`~lsakit.nas.lipschitz.DEFAULT_POWER_ITERS`).

        Args:
            input_shape: one sample's shape (C, H, W), C = ``in_channels``.
            iters: power-iteration steps per convolution.
            pool_bound: ``"paper"`` or ``"l2"`` (see :mod:`lsakit.nas.ops`).

        Returns:
            ``LipschitzConstants(log_c, lam)``: ln C (0-d) and one (E, O) tensor of λ_o per
            cell, all without gradient.
        """
        with torch.no_grad():
            log_c = self.log_constant(input_shape, iters=iters, pool_bound=pool_bound)
            lam = []
            for cell, sizes in zip(self.cells, self.cell_sizes(input_shape), strict=True):
                assert isinstance(cell, SearchCell)
                lam.append(cell.edge_lipschitz(sizes, iters=iters, pool_bound=pool_bound))
        return LipschitzConstants(log_c=log_c, lam=lam)

    def cell_distributions(
        self, constants: LipschitzConstants, *, median: bool = False
    ) -> list[CellDistribution]:
        """The per-cell inputs of :func:`~lsakit.nas.lipschitz.network_lognormal`.

        ``median=True`` sets every σ to 0: the deterministic bound at the median confidences.

        Args:
            constants: ln C and the λ_o, from :meth:`lipschitz_constants`.
            median: set every σ to 0.

        Returns:
            One :class:`~lsakit.nas.lipschitz.CellDistribution` per cell, in order, grouped by
            cell type; its μ and σ carry the gradient to the architecture parameters.
        """
        dists = []
        for cell, lam in zip(self.cells, constants.lam, strict=True):
            assert isinstance(cell, SearchCell)
            kind = "reduce" if cell.reduction else "normal"
            alpha, beta = self.alpha(kind), self.beta(kind)
            alpha_sigma, beta_sigma = alpha.sigma, beta.sigma
            if median:
                alpha_sigma, beta_sigma = alpha_sigma * 0, beta_sigma * 0
            dists.append(
                CellDistribution(
                    alpha_mu=alpha.mu,
                    alpha_sigma=alpha_sigma,
                    beta_mu=beta.mu,
                    beta_sigma=beta_sigma,
                    lam=lam.to(alpha.mu),
                    group=kind,
                )
            )
        return dists

    def lipschitz_lognormal(
        self, constants: LipschitzConstants, *, median: bool = False
    ) -> tuple[Tensor, Tensor]:
        """(μ_F, σ_F) of λ_F ≈ LN(μ_F, σ_F²), differentiable in the architecture parameters.

        ``median=True`` gives (ln of the bound at the median confidences, 0).

        Args:
            constants: ln C and the λ_o, from :meth:`lipschitz_constants`.
            median: set every σ to 0 (see :meth:`cell_distributions`).

        Returns:
            ``(mu_f, sigma_f)``, two 0-d tensors.
        """
        dists = self.cell_distributions(constants, median=median)
        return network_lognormal(dists, log_c=constants.log_c.to(dists[0].alpha_mu))


def _check_ops(ops: Sequence[str]) -> tuple[str, ...]:
    names = tuple(ops)
    if not names:
        raise ConfigError("ops is empty; pass candidate op names, e.g. SMALL_SEARCH_OPS")
    unknown = [n for n in names if n not in OP_NAMES]
    if unknown:
        raise ConfigError(f"unknown ops {unknown}; known: {', '.join(OP_NAMES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"ops listed twice in {list(names)}; list each once")
    if all(n == "none" for n in names):
        raise ConfigError("ops has no op besides 'none'; the network would output a constant")
    return names


__all__ = [
    "DEFAULT_SIGMA_INIT",
    "Architecture",
    "LipschitzConstants",
    "LogNormalParameter",
    "MixedOp",
    "SearchCell",
    "Supernet",
    "inverse_softplus",
]
