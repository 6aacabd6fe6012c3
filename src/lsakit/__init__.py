"""lsakit: layer-level adversarial robustness.

Layer Sustainability Analysis (LSA) hooks a model's layers, compares each layer's representation
of clean and perturbed inputs, and selects the Most Vulnerable Layers (Khalooei et al., 2022,
arXiv:2202.02626). Subpackages: ``lsakit.data``, ``lsakit.models``, ``lsakit.perturb``,
``lsakit.train``, ``lsakit.report``.
"""

from __future__ import annotations

__version__ = "0.1.0"

# First, before anything computes: LSAKIT_NUMERICS=portable pins the math libraries' code paths,
# which each library reads once (lsakit.numerics).
from lsakit import numerics
from lsakit.errors import ConfigError

try:
    numerics.use_environment()
except ConfigError as error:
    numerics.refuse(error)

from lsakit.activations import register_activation, register_functional_activation
from lsakit.analysis import (
    LayerInfo,
    LayerStats,
    LSAResult,
    PerturbationResult,
    analyze,
    relative_errors,
)
from lsakit.config.defaults import DEFAULT_ETA
from lsakit.domain import InputDomain, current_domain, input_domain
from lsakit.errors import LsakitError
from lsakit.measures import compare, cosine_distance, linf_distance, mse, relative_error
from lsakit.probe import Layer, LayerProbe

__all__ = [
    "DEFAULT_ETA",
    "InputDomain",
    "LSAResult",
    "Layer",
    "LayerInfo",
    "LayerProbe",
    "LayerStats",
    "LsakitError",
    "PerturbationResult",
    "__version__",
    "analyze",
    "compare",
    "cosine_distance",
    "current_domain",
    "input_domain",
    "linf_distance",
    "mse",
    "numerics",
    "register_activation",
    "register_functional_activation",
    "relative_error",
    "relative_errors",
]
