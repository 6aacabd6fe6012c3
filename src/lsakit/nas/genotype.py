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

This module gathers the names of four modules, where they have always been imported from:

* :mod:`~lsakit.nas.genotype_format` — :class:`Genotype`, :data:`RACL_PUBLISHED`,
  :func:`load_genotype`, :func:`portable_genotype_kwargs`;
* :mod:`~lsakit.nas.discretization` — :func:`discretize` and its confidences;
* :mod:`~lsakit.nas.discrete_network` — :class:`GenotypeNetwork`, :func:`genotype_network`,
  :func:`measured_lipschitz`;
* :mod:`~lsakit.nas.cell_drawing` — :func:`plot_cell`.
"""

from __future__ import annotations

from lsakit.nas.cell_drawing import plot_cell
from lsakit.nas.discrete_network import (
    DiscreteCell,
    GenotypeNetwork,
    genotype_network,
    measured_lipschitz,
    measured_log_lipschitz,
)
from lsakit.nas.discretization import DEFAULT_Z, RULES, Rule, confidences, discretize, select_cell
from lsakit.nas.genotype_format import (
    NAMED_GENOTYPES,
    RACL_PUBLISHED,
    Genotype,
    GenotypeEdge,
    load_genotype,
    portable_genotype_kwargs,
)

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
