"""lsakit: layer-level adversarial robustness.

Layer Sustainability Analysis (LSA) hooks a model's layers, compares each layer's representation
of clean and perturbed inputs, and selects the Most Vulnerable Layers (Khalooei et al., 2022,
arXiv:2202.02626).
"""

from __future__ import annotations

__version__ = "0.1.0"
