"""Discretization: the genotype of a searched supernet, ranked by the confidences of α and β.

RACL (Dong et al., arXiv:2009.00902) ranks ops by a confidence — the median exp(μ) or the lower
bound exp(μ − zσ) — and keeps the top-2 inputs per node as DARTS does *(inferred)*. Here
*(inferred, PC-DARTS style)* an input's strength is conf(β^(i,j)) · max_{o ≠ none} conf(α_o^(i,j))
(the β factor can be switched off), and each kept input gets its strongest non-zero op.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import Tensor

from lsakit.errors import ConfigError
from lsakit.nas.genotype_format import Genotype, GenotypeEdge
from lsakit.nas.lipschitz import node_edge_slices
from lsakit.nas.supernet import Supernet
from lsakit.validate import choice, number

Rule = Literal["median", "lower_bound"]
RULES: tuple[str, ...] = get_args(Rule)

#: z of the lower-bound rule exp(μ − zσ): Φ⁻¹(0.9), the paper's η (not published for this rule).
DEFAULT_Z = 1.2815515655446004


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

    Returns:
        The genotype: per node its 2 strongest inputs (strongest first), each with its best
        non-``none`` op, and every intermediate node concatenated as the cell output.
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
