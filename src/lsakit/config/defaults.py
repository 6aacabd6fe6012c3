"""The defaults and option types that the configuration shares with the modules that run it.

Each is defined here, once, so that :class:`lsakit.config.TrainConfig` can name them without
importing the trainer, the regularizers or torch; :mod:`lsakit.analysis`, :mod:`lsakit.speed`,
:mod:`lsakit.tracking`, :mod:`lsakit.train.lsp` and :mod:`lsakit.train.regularizers` import
them from here (and re-export them).
"""

from __future__ import annotations

from typing import Literal

# ------------------------------------------------------------------------- LSA (lsakit.analysis)

#: Default cut-off η of Algorithm 1. The paper gives none (the user tunes it); 0.5 lists the layers
#: whose mean measure is more than half a σ above μ, a middle ground between "every layer above
#: the mean" (η = 0) and "only outliers" (η ≥ 1). What it selects on Moon and MNIST is in the
#: README.
DEFAULT_ETA = 0.5

# ------------------------------------------------ the layer-wise regularizer (train.regularizers)

GradThrough = Literal["both", "adversarial", "clean"]

#: Where the gradient of LR flows (the paper does not say). "both" differentiates through φ_l(x)
#: and φ_l(x̂), the literal reading of min_θ E[J + LR(θ, x, x̂)] (Eq. 14) with no stop-gradient;
#: "adversarial" detaches φ_l(x) (the clean representation is a fixed target); "clean" detaches
#: φ_l(x̂). Measured by ``benchmarks/exp_lr_choices.py`` (Moon, model A, AT-FGSM ε_raw 0.3 + LR on
#: L2, 20 epochs, 6 seeds, γ = 0.1): relative error of L2 under PGD 0.52 (base) → 0.19 (both),
#: 0.17 (clean), 0.42 (adversarial); FGSM accuracy at ε_raw 0.5: 56.0 ± 3.4 (base), 57.9 ± 4.8,
#: 58.4 ± 6.6, 59.2 ± 4.9. "adversarial" alone cannot drive the layer's error down (it never
#: reached the −50% target at any γ); "both" and "clean" are indistinguishable within seed noise,
#: so the literal reading wins.
DEFAULT_GRAD_THROUGH: GradThrough = "both"

#: Default γ for every regularized layer (values are not published). Same experiment, grad_through
#: "both", 3 seeds, γ ∈ {0.03, 0.1, 0.3, 1}: L2's relative error under PGD 0.47, 0.16, 0.07, 0.00 (base
#: 0.48); at γ = 1 every seed collapsed to a constant classifier (50%): the relative error can be
#: zeroed by inflating a shared offset of φ_l, which large γ rewards. γ = 0.1 is the largest tested
#: value that cuts the error by more than half while keeping clean and large-ε FGSM accuracy near
#: the base (it did not raise the R&G score on Moon in that setting: 457 ± 20 vs 472 ± 7).
DEFAULT_GAMMA = 0.1

# ------------------------------------------------ local structure preservation (train.lsp)

Bandwidth = Literal["median", "perplexity"]
LSPVariant = Literal["kl", "laplacian"]
LSPOn = Literal["clean", "clean+adv"]

#: Default way to set s_i: the median heuristic (no search, cheapest).
DEFAULT_BANDWIDTH: Bandwidth = "median"
#: Default perplexity for ``bandwidth="perplexity"`` (t-SNE's customary value).
DEFAULT_PERPLEXITY = 30.0
#: Default λ of the LSP term: the low end of the spec's grid {0.1, 0.5, 1, 2} (see
#: :mod:`lsakit.train.lsp`).
DEFAULT_LSP_WEIGHT = 0.1

# ------------------------------------------------------------------------- speed (lsakit.speed)

#: Mixed precision of training forwards and attacks.
Amp = Literal["off", "bf16", "fp16"]

# ---------------------------------------------------------------- tracking (lsakit.tracking)

#: An experiment-tracking backend.
TrackingBackend = Literal["tensorboard", "mlflow"]

__all__ = [
    "DEFAULT_BANDWIDTH",
    "DEFAULT_ETA",
    "DEFAULT_GAMMA",
    "DEFAULT_GRAD_THROUGH",
    "DEFAULT_LSP_WEIGHT",
    "DEFAULT_PERPLEXITY",
    "Amp",
    "Bandwidth",
    "GradThrough",
    "LSPOn",
    "LSPVariant",
    "TrackingBackend",
]

# ------------------------------------------------------------------ RACL search (lsakit.nas)

#: The defaults of a RACL search that ``lsakit search`` also shows: the one declaration
#: :class:`lsakit.nas.SearchConfig` and :class:`lsakit.config.commands.SearchOptions` both read
#: (the command must not import lsakit.nas, which loads torch and matplotlib).
SEARCH_CELLS = 2
SEARCH_NODES = 3
SEARCH_CHANNELS = 8
SEARCH_EPOCHS = 5
SEARCH_LAM_BAR_FACTOR = 1.0
