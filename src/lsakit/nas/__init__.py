"""RACL: Lipschitz-constrained differentiable architecture search, small faithful variant.

Dong, Li, Wang, Xu, "Adversarially Robust Neural Architectures", arXiv:2009.00902 (TPAMI 2025):
a DARTS supernet whose architecture weights are log-normal confidences, searched under the
chance constraint Pr(λ_F ≤ λ̄_F) ≥ η on the network's Lipschitz bound. Modules:

* :mod:`~lsakit.nas.lipschitz` — power iteration, BN factor, Fenton–Wilkinson, μ_F/σ_F, g;
* :mod:`~lsakit.nas.ops` — the candidate ops and their λ_o;
* :mod:`~lsakit.nas.network` — the DARTS macro-architecture (stem, cells, head, ln C);
* :mod:`~lsakit.nas.supernet` — the supernet with log-normal α, β;
* :mod:`~lsakit.nas.search` — the first-order search with the augmented Lagrangian;
* :mod:`~lsakit.nas.genotype` — genotypes, discretization, the discrete network, its measured
  bound, the published RACL cell, cell drawings.

Example::

    from lsakit.nas import SearchConfig, search, GenotypeNetwork, measured_lipschitz

    result = search(SearchConfig(epochs=3), x_train, y_train, x_val, y_val)
    net = GenotypeNetwork(result.genotype, cells=3, channels=16)
    lam_f = measured_lipschitz(net, (1, 28, 28))
"""

from __future__ import annotations

from lsakit.nas.genotype import (
    DEFAULT_Z,
    RACL_PUBLISHED,
    Genotype,
    GenotypeNetwork,
    discretize,
    genotype_network,
    load_genotype,
    measured_lipschitz,
    measured_log_lipschitz,
    plot_cell,
)
from lsakit.nas.lipschitz import (
    CellDistribution,
    batchnorm_factor,
    constraint,
    fenton_wilkinson,
    lognormal_product,
    network_lognormal,
    power_iteration,
    power_iteration_conv,
    power_iteration_linear,
)
from lsakit.nas.network import darts_reductions
from lsakit.nas.ops import DARTS_OPS, OP_NAMES, SMALL_SEARCH_OPS, build_op, lipschitz
from lsakit.nas.search import SearchConfig, SearchRecord, SearchResult, search
from lsakit.nas.supernet import LogNormalParameter, Supernet

__all__ = [
    "DARTS_OPS",
    "DEFAULT_Z",
    "OP_NAMES",
    "RACL_PUBLISHED",
    "SMALL_SEARCH_OPS",
    "CellDistribution",
    "Genotype",
    "GenotypeNetwork",
    "LogNormalParameter",
    "SearchConfig",
    "SearchRecord",
    "SearchResult",
    "Supernet",
    "batchnorm_factor",
    "build_op",
    "constraint",
    "darts_reductions",
    "discretize",
    "fenton_wilkinson",
    "genotype_network",
    "lipschitz",
    "load_genotype",
    "lognormal_product",
    "measured_lipschitz",
    "measured_log_lipschitz",
    "network_lognormal",
    "plot_cell",
    "power_iteration",
    "power_iteration_conv",
    "power_iteration_linear",
    "search",
]
