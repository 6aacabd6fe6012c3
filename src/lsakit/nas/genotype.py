"""Genotypes: the discrete cells RACL derives, the network built from one, and its bound.

A :class:`Genotype` is DARTS's format (Liu et al., ICLR 2019, ``genotypes.py``): per cell type a
list of (op, input) pairs, two per intermediate node (node j's inputs are 0 = c_{k−2},
1 = c_{k−1}, 2 + i = node i < j), and the nodes concatenated as the cell output.

:func:`discretize` turns a searched :class:`~lsakit.nas.supernet.Supernet` into a genotype. RACL
(Dong et al., arXiv:2009.00902) ranks ops by a confidence — the median exp(μ) or the lower bound
exp(μ − zσ) — and keeps the top-2 inputs per node as DARTS does *(inferred)*. Here *(inferred,
PC-DARTS style)* an input's strength is conf(β^(i,j)) · max_{o ≠ none} conf(α_o^(i,j)) (the
β factor can be switched off), and each kept input gets its strongest non-zero op.

:data:`RACL_PUBLISHED` is the cell the paper published (it also circulates in other
repositories' ``genotypes.py``); it uses ``sep_conv_5x5`` and ``dil_conv_3x3``, outside the small
search space, which :class:`GenotypeNetwork` builds all the same.

:func:`measured_lipschitz` applies the bound's formula to a network's current weights:
C · Π_cells Π_nodes Σ_edges w λ_o — for a :class:`GenotypeNetwork` with weight 1 on each kept
edge, for a supernet with the median confidences (σ → 0).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from lsakit._io import atomic_write
from lsakit.errors import ConfigError
from lsakit.nas._validation import choice, number
from lsakit.nas.lipschitz import DEFAULT_POWER_ITERS, node_edge_slices
from lsakit.nas.network import (
    DEFAULT_STEM_MULTIPLIER,
    Cell,
    CellNetwork,
    CellSizes,
    darts_reductions,
)
from lsakit.nas.ops import (
    DEFAULT_POOL_BOUND,
    OP_NAMES,
    LipschitzOp,
    PoolBound,
    build_op,
    module_lipschitz,
)
from lsakit.nas.supernet import LipschitzConstants, Supernet

Rule = Literal["median", "lower_bound"]
RULES: tuple[str, ...] = get_args(Rule)

#: z of the lower-bound rule exp(μ − zσ): Φ⁻¹(0.9), the paper's η (not published for this rule).
DEFAULT_Z = 1.2815515655446004

#: One edge of a genotype: (op name, input index).
GenotypeEdge = tuple[str, int]


def _edges(value: object, field: str) -> tuple[GenotypeEdge, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"genotype {field} must be a list of [op, input] pairs, got {value!r}")
    edges: list[GenotypeEdge] = []
    for k, item in enumerate(value):
        if isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) != 2:
            raise ConfigError(f"genotype {field}[{k}] must be an [op, input] pair, got {item!r}")
        op, source = item[0], item[1]
        if not isinstance(op, str) or op not in OP_NAMES:
            raise ConfigError(
                f"genotype {field}[{k}] has unknown op {op!r}; known: {', '.join(OP_NAMES)}"
            )
        node = k // 2
        if isinstance(source, bool) or not isinstance(source, int) or not 0 <= source < node + 2:
            raise ConfigError(
                f"genotype {field}[{k}] (node {node}) reads input {source!r}; node {node} can "
                f"read inputs 0..{node + 1} (0, 1: the cell inputs, 2 + i: node i)"
            )
        edges.append((op, source))
    if len(edges) % 2:
        raise ConfigError(f"genotype {field} has {len(edges)} edges; DARTS cells take 2 per node")
    return tuple(edges)


def _concat(value: object, field: str, nodes: int) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigError(f"genotype {field} must be a list of node indices, got {value!r}")
    items = tuple(value)
    for i in items:
        if isinstance(i, bool) or not isinstance(i, int) or not 2 <= i < nodes + 2:
            raise ConfigError(
                f"genotype {field} must list intermediate nodes in [2, {nodes + 2}), got {items!r}"
            )
    if len(set(items)) != len(items):
        raise ConfigError(f"genotype {field} lists a node twice: {items!r}")
    return items


@dataclass(frozen=True)
class Genotype:
    """A DARTS genotype: normal and reduction cells as (op, input) pairs, two per node.

    ``reduce`` may be empty (a search without reduction cells); lists are stored as tuples.
    """

    normal: tuple[GenotypeEdge, ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[GenotypeEdge, ...] = ()
    reduce_concat: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        normal = _edges(self.normal, "normal")
        if not normal:
            raise ConfigError("genotype normal is empty; a cell needs at least one node")
        reduce = _edges(self.reduce, "reduce")
        object.__setattr__(self, "normal", normal)
        object.__setattr__(self, "reduce", reduce)
        object.__setattr__(
            self, "normal_concat", _concat(self.normal_concat, "normal_concat", len(normal) // 2)
        )
        object.__setattr__(
            self, "reduce_concat", _concat(self.reduce_concat, "reduce_concat", len(reduce) // 2)
        )
        if not self.normal_concat or bool(reduce) != bool(self.reduce_concat):
            raise ConfigError(
                "genotype concat lists must name the output nodes of every cell type it defines"
            )

    def cell(self, kind: str) -> tuple[tuple[GenotypeEdge, ...], tuple[int, ...]]:
        """(edges, concat) of ``"normal"`` or ``"reduce"``."""
        if kind == "normal":
            return self.normal, self.normal_concat
        if kind == "reduce":
            return self.reduce, self.reduce_concat
        raise ConfigError(f"cell kind must be normal or reduce, got {kind!r}")

    def nodes(self, kind: str = "normal") -> int:
        """Intermediate nodes of a cell type (two edges each)."""
        return len(self.cell(kind)[0]) // 2

    def with_reduce_from_normal(self) -> Genotype:
        """This genotype with the normal cell also used as the reduction cell.

        A search without reduction cells (the small MNIST variant) yields no reduce cell; a
        retrained network that downsamples can reuse the normal cell, its edges from the cell
        inputs then having stride 2 (an explicit choice, never made silently).
        """
        return Genotype(
            normal=self.normal,
            normal_concat=self.normal_concat,
            reduce=self.normal,
            reduce_concat=self.normal_concat,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: lists of [op, input] pairs and of node indices."""
        return {
            "normal": [[op, i] for op, i in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, i] for op, i in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Genotype:
        """Inverse of :meth:`to_dict` (``reduce`` keys optional); ConfigError on bad content."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"a genotype must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - {"normal", "normal_concat", "reduce", "reduce_concat"})
        if unknown or "normal" not in data or "normal_concat" not in data:
            raise ConfigError(
                f"a genotype needs normal and normal_concat (and optionally reduce, "
                f"reduce_concat); unknown keys: {unknown or 'none'}"
            )
        return cls(
            normal=data["normal"],
            normal_concat=data["normal_concat"],
            reduce=data.get("reduce", ()),
            reduce_concat=data.get("reduce_concat", ()),
        )

    def to_json(self) -> str:
        """The genotype as a JSON string (:meth:`to_dict`)."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        """Parse :meth:`to_json` output."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"genotype JSON is not valid: {err}") from None
        return cls.from_dict(data)

    def __str__(self) -> str:
        """DARTS's ``Genotype(normal=[('sep_conv_3x3', 0), …], normal_concat=[2, …], …)``."""
        return (
            f"Genotype(normal={list(self.normal)}, normal_concat={list(self.normal_concat)}, "
            f"reduce={list(self.reduce)}, reduce_concat={list(self.reduce_concat)})"
        )


#: The cell published with RACL (Dong et al., arXiv:2009.00902).
RACL_PUBLISHED = Genotype(
    normal=(
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_5x5", 0),
        ("skip_connect", 1),
        ("sep_conv_3x3", 0),
        ("skip_connect", 3),
        ("sep_conv_3x3", 3),
        ("skip_connect", 4),
    ),
    normal_concat=(2, 3, 4, 5),
    reduce=(
        ("sep_conv_3x3", 0),
        ("sep_conv_5x5", 1),
        ("avg_pool_3x3", 0),
        ("dil_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_5x5", 1),
        ("sep_conv_3x3", 2),
        ("dil_conv_3x3", 3),
    ),
    reduce_concat=(2, 3, 4, 5),
)


# --------------------------------------------------------------------------------------------
# Discretization
# --------------------------------------------------------------------------------------------


def confidences(
    supernet: Supernet, kind: str, rule: Rule = "median", z: float = DEFAULT_Z
) -> tuple[Tensor, Tensor]:
    """(conf α (E, O), conf β (E,)) of a cell type: exp(μ) or exp(μ − zσ), detached."""
    rule_name = choice(rule, "rule", RULES)
    z = number(z, "z")
    alpha, beta = supernet.alpha(kind), supernet.beta(kind)
    with torch.no_grad():
        if rule_name == "median":
            return alpha.median(), beta.median()
        return alpha.lower_bound(z), beta.lower_bound(z)


def select_cell(
    alpha_conf: Tensor,
    beta_conf: Tensor | None,
    op_names: Sequence[str],
    nodes: int,
) -> tuple[GenotypeEdge, ...]:
    """DARTS's rule on confidences: per node the 2 strongest inputs, each with its best op.

    An input's strength is (β conf ·) the largest non-``none`` α conf on its edge; ties go to the
    lower input index. Entries are listed strongest first within each node, as DARTS does.
    """
    candidates = [k for k, name in enumerate(op_names) if name != "none"]
    if not candidates:
        raise ConfigError("the supernet has only the 'none' op; nothing to discretize")
    chosen: list[GenotypeEdge] = []
    for j, sl in enumerate(node_edge_slices(nodes)):
        scored: list[tuple[float, int, str]] = []
        for i, e in enumerate(range(sl.start, sl.stop)):
            row = alpha_conf[e, candidates]
            best = int(row.argmax())
            strength = float(row[best]) * (float(beta_conf[e]) if beta_conf is not None else 1.0)
            scored.append((strength, i, op_names[candidates[best]]))
        scored.sort(key=lambda t: (-t[0], t[1]))
        keep = scored[: min(2, j + 2)]
        chosen.extend((op, i) for _, i, op in keep)
    return tuple(chosen)


def discretize(
    supernet: Supernet,
    rule: Rule = "median",
    z: float = DEFAULT_Z,
    *,
    use_beta: bool = True,
) -> Genotype:
    """The genotype of a searched supernet (module notes): top-2 inputs per node, best op each.

    Args:
        supernet: the searched supernet.
        rule: ``"median"`` ranks by exp(μ), ``"lower_bound"`` by exp(μ − zσ).
        z: the lower bound's z (default Φ⁻¹(0.9)); unused by the median rule.
        use_beta: multiply an input's strength by its β confidence (PC-DARTS); else α only.

    Without reduction cells the genotype's ``reduce`` is empty.
    """
    cells: dict[str, tuple[GenotypeEdge, ...]] = {}
    for kind in supernet.cell_types:
        alpha_conf, beta_conf = confidences(supernet, kind, rule, z)
        cells[kind] = select_cell(
            alpha_conf, beta_conf if use_beta else None, supernet.op_names, supernet.nodes
        )
    concat = tuple(range(2, supernet.nodes + 2))
    reduce = cells.get("reduce", ())
    return Genotype(
        normal=cells["normal"],
        normal_concat=concat,
        reduce=reduce,
        reduce_concat=concat if reduce else (),
    )


# --------------------------------------------------------------------------------------------
# The discrete network
# --------------------------------------------------------------------------------------------


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
        genotype: the cells (e.g. :data:`RACL_PUBLISHED` or a :func:`discretize` result).
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
        """
        shape = input_shape if input_shape is not None else getattr(self, "last_input_shape", None)
        if shape is None:
            raise ConfigError(
                "lipschitz_bound needs the input shape (C, H, W): pass it, or run the network "
                "on a batch first"
            )
        return float(measured_lipschitz(self, shape, iters=iters, pool_bound=pool_bound))


#: Genotypes known by name to :func:`genotype_network`.
NAMED_GENOTYPES: dict[str, Genotype] = {"racl_published": RACL_PUBLISHED}


def load_genotype(spec: str | Genotype) -> Genotype:
    """A genotype from a name in :data:`NAMED_GENOTYPES`, a JSON text or a JSON file.

    A JSON file may hold the genotype itself or a search result (its ``"genotype"`` key), so
    ``result.json`` written from :meth:`~lsakit.nas.search.SearchResult.to_dict` works as is.
    """
    if isinstance(spec, Genotype):
        return spec
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"genotype must be a name, JSON text or a JSON file, got {spec!r}")
    if spec in NAMED_GENOTYPES:
        return NAMED_GENOTYPES[spec]
    text = spec
    if not spec.lstrip().startswith("{"):
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(
                f"genotype {spec!r} is neither a known name ({', '.join(NAMED_GENOTYPES)}), "
                f"JSON text, nor an existing file"
            )
        text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"genotype JSON is not valid: {err}") from None
    if isinstance(data, Mapping) and "genotype" in data:
        data = data["genotype"]
    return Genotype.from_dict(data)


def portable_genotype_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with a genotype file replaced by its JSON text: a checkpoint must not depend on a
    file that may move (a known name stays a name; JSON text is normalised)."""
    spec = kwargs.get("genotype")
    if isinstance(spec, str) and spec not in NAMED_GENOTYPES:
        return {**kwargs, "genotype": json.dumps(load_genotype(spec).to_dict())}
    return kwargs


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


# --------------------------------------------------------------------------------------------
# The bound with the current weights
# --------------------------------------------------------------------------------------------


def measured_log_lipschitz(
    network: GenotypeNetwork | Supernet,
    input_shape: Sequence[int],
    *,
    iters: int = DEFAULT_POWER_ITERS,
    pool_bound: PoolBound = DEFAULT_POOL_BOUND,
) -> Tensor:
    """ln λ_F of :func:`measured_lipschitz` (float64, CPU), safe from overflow for deep nets."""
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
    """
    return measured_log_lipschitz(network, input_shape, iters=iters, pool_bound=pool_bound).exp()


# --------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------

_OP_COLORS = {
    "none": "#bbbbbb",
    "skip_connect": "#4c72b0",
    "max_pool_3x3": "#55a868",
    "avg_pool_3x3": "#8fd19e",
    "conv_3x3": "#c44e52",
    "sep_conv_3x3": "#dd8452",
    "sep_conv_5x5": "#937860",
    "dil_conv_3x3": "#8172b2",
    "dil_conv_5x5": "#da8bc3",
}


def _curve(start: tuple[float, float], end: tuple[float, float], bend: float) -> list[list[float]]:
    """Points of a quadratic Bézier from ``start`` to ``end`` bulging by ``bend`` × length,
    trimmed at both ends so arrows stop at the node circles (data coordinates)."""
    (x0, y0), (x1, y1) = start, end
    dx, dy = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2 - bend * dy, (y0 + y1) / 2 + bend * dx
    length = max((dx * dx + dy * dy) ** 0.5, 1e-9)
    trim = min(0.22 / length, 0.3)
    steps = 24
    points = []
    for k in range(steps + 1):
        t = trim + (1 - 2 * trim) * k / steps
        a, b, c = (1 - t) ** 2, 2 * t * (1 - t), t**2
        points.append([a * x0 + b * cx + c * x1, a * y0 + b * cy + c * y1])
    return points


def _draw_cell(ax: Any, edges: Sequence[GenotypeEdge], concat: Sequence[int], title: str) -> None:
    from matplotlib.patches import FancyArrowPatch
    from matplotlib.path import Path as MplPath

    nodes = len(edges) // 2
    pos: dict[int, tuple[float, float]] = {0: (0.0, 1.0), 1: (0.0, -1.0)}
    for j in range(nodes):
        pos[j + 2] = (1.8 * (j + 1), 0.8 if j % 2 == 0 else -0.8)
    out = (1.8 * (nodes + 1), 0.0)

    def arrow(points: list[list[float]], color: str, style: str, width: float) -> None:
        ax.add_patch(
            FancyArrowPatch(
                path=MplPath(points),
                arrowstyle="-|>",
                mutation_scale=11,
                color=color,
                lw=width,
                linestyle=style,
            )
        )

    for k, (op, source) in enumerate(edges):
        color = _OP_COLORS.get(op, "black")
        points = _curve(pos[source], pos[k // 2 + 2], 0.18 if k % 2 else -0.18)
        arrow(points, color, "-", 1.6)
        # Labels of a node's two inputs sit at different fractions of the curves, so the labels
        # of edges converging on one node do not overlap.
        lx, ly = points[(len(points) * (2 if k % 2 else 3)) // 5]
        ax.text(
            lx,
            ly,
            op,
            fontsize=7,
            ha="center",
            va="center",
            color=color,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
        )
    for i in concat:
        arrow(_curve(pos[i], out, 0.0), "#888888", "--", 1.0)
    names = {0: "$c_{k-2}$", 1: "$c_{k-1}$"} | {j + 2: str(j) for j in range(nodes)}
    for i, (x, y) in pos.items():
        face = "#d8e6f3" if i < 2 else "#fbe3c6"
        bbox = {"boxstyle": "circle,pad=0.3", "fc": face, "ec": "black"}
        ax.text(x, y, names[i], ha="center", va="center", fontsize=8, bbox=bbox)
    bbox = {"boxstyle": "circle,pad=0.3", "fc": "#cfe8cf", "ec": "black"}
    ax.text(out[0], out[1], "$c_{k}$", ha="center", va="center", fontsize=8, bbox=bbox)
    ax.set_xlim(-0.5, out[0] + 0.5)
    ax.set_ylim(-1.5, 1.5)
    ax.set_title(title)
    ax.set_axis_off()


def plot_cell(
    genotype: Genotype,
    path: str | os.PathLike[str],
    *,
    kinds: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Draw the genotype's cells (normal, and reduce when present) as a PNG; no graphviz.

    Inputs c_{k−2}, c_{k−1} on the left, intermediate nodes in the middle (one colour per op on
    the edges, labelled), the concatenated output c_k on the right (dashed edges). Written
    atomically; returns the path.
    """
    chosen = (
        list(kinds)
        if kinds is not None
        else (["normal", "reduce"] if genotype.reduce else ["normal"])
    )
    for kind in chosen:
        choice(kind, "kind", ("normal", "reduce"))
        if not genotype.cell(kind)[0]:
            raise ConfigError(f"the genotype has no {kind} cell to draw")
    width = max(genotype.nodes(k) for k in chosen) * 1.5 + 3
    fig = Figure(figsize=(width, 3.0 * len(chosen)), dpi=120)
    for row, kind in enumerate(chosen):
        ax = fig.add_subplot(len(chosen), 1, row + 1)
        edges, concat = genotype.cell(kind)
        _draw_cell(ax, edges, concat, f"{kind} cell")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


__all__ = [
    "DEFAULT_Z",
    "NAMED_GENOTYPES",
    "RACL_PUBLISHED",
    "RULES",
    "DiscreteCell",
    "Genotype",
    "GenotypeEdge",
    "GenotypeNetwork",
    "Rule",
    "confidences",
    "discretize",
    "genotype_network",
    "load_genotype",
    "measured_lipschitz",
    "measured_log_lipschitz",
    "plot_cell",
    "portable_genotype_kwargs",
    "select_cell",
]
