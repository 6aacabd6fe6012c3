"""The discrete network of a genotype, and its Lipschitz bound with the current weights.

:class:`GenotypeNetwork` builds the DARTS macro-architecture (:mod:`lsakit.nas.network`) from a
:class:`~lsakit.nas.genotype_format.Genotype`'s cells (:class:`DiscreteCell`);
:func:`genotype_network` is its registry-style builder (model ``genotype_net``).

:func:`measured_lipschitz` applies the bound's formula to a network's current weights:
C · Π_cells Π_nodes Σ_edges w λ_o — for a :class:`GenotypeNetwork` with weight 1 on each kept
edge, for a supernet with the median confidences (σ → 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lsakit.errors import ConfigError
from lsakit.nas.genotype_format import Genotype, GenotypeEdge, load_genotype
from lsakit.nas.lipschitz import DEFAULT_POWER_ITERS
from lsakit.nas.network import (
    DEFAULT_STEM_MULTIPLIER,
    Cell,
    CellNetwork,
    CellSizes,
    darts_reductions,
)
from lsakit.nas.ops import (
    DEFAULT_POOL_BOUND,
    LipschitzOp,
    PoolBound,
    build_op,
    module_lipschitz,
)
from lsakit.nas.supernet import LipschitzConstants, Supernet


class DiscreteCell(Cell):
    """A cell built from a genotype: node j = op(input) + op'(input'), output = concat."""

    def __init__(
        self,
        edges: Sequence[GenotypeEdge],
        concat: Sequence[int],
        prev_prev_channels: int,
        prev_channels: int,
        channels: int,
        *,
        reduction: bool,
        reduction_prev: bool,
    ) -> None:
        super().__init__(
            prev_prev_channels,
            prev_channels,
            channels,
            reduction=reduction,
            reduction_prev=reduction_prev,
            affine=True,
        )
        self.edges = tuple(edges)
        self.concat = tuple(concat)
        self.ops = nn.ModuleList(
            build_op(name, channels, stride=2 if reduction and source < 2 else 1)
            for name, source in self.edges
        )

    @property
    def multiplier(self) -> int:
        return len(self.concat)

    def forward(self, s0: Tensor, s1: Tensor) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for j in range(len(self.edges) // 2):
            total = None
            for k in (2 * j, 2 * j + 1):
                out = self.ops[k](states[self.edges[k][1]])
                total = out if total is None else total + out
            assert total is not None
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)

    def node_lipschitz(
        self,
        sizes: CellSizes,
        *,
        iters: int = DEFAULT_POWER_ITERS,
        pool_bound: PoolBound = DEFAULT_POOL_BOUND,
    ) -> Tensor:
        """Σ_{kept edges} λ_o per node, (nodes,) (edges from the cell inputs see s₁'s size)."""
        sums = []
        for j in range(len(self.edges) // 2):
            total = torch.zeros((), dtype=torch.float64)
            for k in (2 * j, 2 * j + 1):
                op = self.ops[k]
                assert isinstance(op, LipschitzOp)
                size = sizes.s1 if self.edges[k][1] < 2 else sizes.out
                lam, _ = module_lipschitz(op, size, iters=iters, pool_bound=pool_bound)
                total = total + lam.detach().to("cpu", torch.float64)
            sums.append(total)
        return torch.stack(sums)


class GenotypeNetwork(CellNetwork):
    """A discrete DARTS network from a genotype, for training with any objective.

    Args:
        genotype: the cells (e.g. :data:`~lsakit.nas.genotype.RACL_PUBLISHED` or a
            :func:`~lsakit.nas.genotype.discretize` result).
        cells: number of cells.
        channels: C of the first cells (doubled at each reduction cell).
        in_channels: input image channels.
        num_classes: number of logits.
        reductions: indices of reduction cells (default none; DARTS's positions:
            :func:`~lsakit.nas.network.darts_reductions`). Needs ``genotype.reduce``.
        stem_multiplier: stem channels = stem_multiplier · C.

    Inputs are in [0, 1] with no normalization inside (as model B). No drop-path and no
    auxiliary head (DARTS's evaluation extras).
    """

    def __init__(
        self,
        genotype: Genotype,
        *,
        cells: int = 3,
        channels: int = 16,
        in_channels: int = 1,
        num_classes: int = 10,
        reductions: Sequence[int] = (),
        stem_multiplier: int = DEFAULT_STEM_MULTIPLIER,
    ) -> None:
        super().__init__()
        if not isinstance(genotype, Genotype):
            raise ConfigError(f"genotype must be a Genotype, got {type(genotype).__name__}")
        if tuple(reductions) and not genotype.reduce:
            raise ConfigError(
                "the network has reduction cells but the genotype has no reduce cell; pass "
                "reductions=() or a genotype with a reduce cell"
            )
        self.genotype = genotype
        self._build(
            self._make_cell,
            cells=cells,
            channels=channels,
            in_channels=in_channels,
            num_classes=num_classes,
            reductions=reductions,
            stem_multiplier=stem_multiplier,
        )

    def _make_cell(
        self, index: int, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool
    ) -> Cell:
        edges, concat = self.genotype.cell("reduce" if reduction else "normal")
        return DiscreteCell(
            edges, concat, c_pp, c_p, c, reduction=reduction, reduction_prev=reduction_prev
        )

    def forward(self, x: Tensor) -> Tensor:
        """Stem, cells, global average pool and classifier.

        Also remembers one sample's shape for :meth:`lipschitz_bound`.

        Args:
            x: a batch ``(N, in_channels, H, W)``, in [0, 1] for the registry's data.

        Returns:
            The logits, ``(N, num_classes)``.
        """
        # Remembered for lipschitz_bound(), whose spectral norms depend on the input size.
        self.last_input_shape: tuple[int, ...] | None = tuple(x.shape[1:])
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return self._head(s1)

    def lipschitz_bound(
        self,
        input_shape: Sequence[int] | None = None,
        *,
        iters: int = DEFAULT_POWER_ITERS,
        pool_bound: PoolBound = DEFAULT_POOL_BOUND,
    ) -> float:
        """:func:`measured_lipschitz` of this network, for one sample's (C, H, W).

        Without ``input_shape``, the shape of the inputs of the latest forward pass is used
        (the study runner calls this after evaluating the model).

        Args:
            input_shape: one sample's shape (C, H, W), C = ``in_channels``; None for the latest
                forward's (ConfigError before any forward).
            iters: power-iteration steps per convolution (warm-started on repeated calls).
            pool_bound: ``"paper"`` or ``"l2"`` (see :mod:`lsakit.nas.ops`).

        Returns:
            λ_F, the bound with the current weights.
        """
        shape = input_shape if input_shape is not None else getattr(self, "last_input_shape", None)
        if shape is None:
            raise ConfigError(
                "lipschitz_bound needs the input shape (C, H, W): pass it, or run the network "
                "on a batch first"
            )
        return float(measured_lipschitz(self, shape, iters=iters, pool_bound=pool_bound))


def genotype_network(
    *,
    genotype: str = "racl_published",
    cells: int = 3,
    channels: int = 16,
    in_channels: int = 1,
    num_classes: int = 10,
    reductions: Sequence[int] | None = None,
    reduce_from_normal: bool = False,
    stem_multiplier: int = DEFAULT_STEM_MULTIPLIER,
) -> GenotypeNetwork:
    """Registry-style builder (keyword-only, defaults in the signature) of a :class:`GenotypeNetwork`.

    Args:
        genotype: a name (``"racl_published"``), JSON text or a JSON file (:func:`load_genotype`).
        cells, channels, in_channels, num_classes, stem_multiplier: as :class:`GenotypeNetwork`.
        reductions: reduction-cell indices; None = DARTS's positions
            (:func:`~lsakit.nas.network.darts_reductions`) when the genotype has (or is given) a
            reduce cell, else none.
        reduce_from_normal: use the normal cell as the reduce cell
            (:meth:`Genotype.with_reduce_from_normal`) when the genotype has none.

    Returns:
        A new network with freshly initialized weights.
    """
    chosen = load_genotype(genotype)
    if reduce_from_normal and not chosen.reduce:
        chosen = chosen.with_reduce_from_normal()
    if reductions is None:
        reductions = darts_reductions(cells) if chosen.reduce else ()
    return GenotypeNetwork(
        chosen,
        cells=cells,
        channels=channels,
        in_channels=in_channels,
        num_classes=num_classes,
        reductions=tuple(reductions),
        stem_multiplier=stem_multiplier,
    )


def measured_log_lipschitz(
    network: GenotypeNetwork | Supernet,
    input_shape: Sequence[int],
    *,
    iters: int = DEFAULT_POWER_ITERS,
    pool_bound: PoolBound = DEFAULT_POOL_BOUND,
) -> Tensor:
    """ln λ_F of :func:`measured_lipschitz` (float64, CPU), safe from overflow for deep nets.

    Args:
        network: a :class:`GenotypeNetwork` or a :class:`Supernet` (else ConfigError).
        input_shape: one sample's shape (C, H, W), C = the network's ``in_channels``.
        iters: power-iteration steps per convolution (warm-started on repeated calls).
        pool_bound: ``"paper"`` or ``"l2"`` (see :mod:`lsakit.nas.ops`).

    Returns:
        ln λ_F, a 0-d float64 CPU tensor without gradient.
    """
    if isinstance(network, Supernet):
        constants: LipschitzConstants = network.lipschitz_constants(
            input_shape, iters=iters, pool_bound=pool_bound
        )
        with torch.no_grad():
            mu_f, _ = network.lipschitz_lognormal(constants, median=True)
        return mu_f.detach().to("cpu", torch.float64)
    if not isinstance(network, GenotypeNetwork):
        raise ConfigError(
            f"measured_lipschitz takes a GenotypeNetwork or a Supernet, got {type(network).__name__}"
        )
    with torch.no_grad():
        log_c = network.log_constant(input_shape, iters=iters, pool_bound=pool_bound)
        total = log_c.detach().to("cpu", torch.float64)
        for cell, sizes in zip(network.cells, network.cell_sizes(input_shape), strict=True):
            assert isinstance(cell, DiscreteCell)
            total = (
                total + cell.node_lipschitz(sizes, iters=iters, pool_bound=pool_bound).log().sum()
            )
    return total


def measured_lipschitz(
    network: GenotypeNetwork | Supernet,
    input_shape: Sequence[int],
    *,
    iters: int = DEFAULT_POWER_ITERS,
    pool_bound: PoolBound = DEFAULT_POOL_BOUND,
) -> Tensor:
    """λ_F = C · Π_cells Π_nodes Σ_edges w·λ_o with the current weights (float64, CPU, 0-d).

    For a :class:`GenotypeNetwork` w = 1 on every kept edge; for a :class:`Supernet` w is the
    median confidence (β·α per op). λ_o by power iteration (``iters`` steps, warm-started on
    repeated calls); ``input_shape`` is one sample's (C, H, W).

    Args:
        network: a :class:`GenotypeNetwork` or a :class:`Supernet` (else ConfigError).
        input_shape: one sample's shape (C, H, W), C = the network's ``in_channels``.
        iters: power-iteration steps per convolution.
        pool_bound: ``"paper"`` or ``"l2"`` (see :mod:`lsakit.nas.ops`).

    Returns:
        λ_F, a 0-d float64 CPU tensor without gradient (exp of :func:`measured_log_lipschitz`).
    """
    return measured_log_lipschitz(network, input_shape, iters=iters, pool_bound=pool_bound).exp()
