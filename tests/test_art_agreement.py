"""Agreement with an independent implementation: the Adversarial Robustness Toolbox (ART).

Same model, same data, same settings — each bound is the one the README states: FGSM examples
identical to ART's (bit for bit); PGD without random start the same robust accuracy (its
examples were identical too, measured); APGD-CE within 1 point, as its random start differs
between implementations (|Δ| 0 to 0.8 points measured over 20 random starts of each, on 500
test points; 0.2 with the seeds pinned here).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lsakit.config import TrainConfig
from lsakit.data import load_tensors
from lsakit.perturb import APGD, FGSM, PGD
from lsakit.train import train

art = pytest.importorskip("art", reason="ART (adversarial-robustness-toolbox) is a dev dependency")
from art.attacks.evasion import (  # noqa: E402
    AutoProjectedGradientDescent,
    FastGradientMethod,
    ProjectedGradientDescent,
)
from art.estimators.classification import PyTorchClassifier  # noqa: E402


@pytest.fixture(scope="module")
def setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor, PyTorchClassifier]:
    """Model A trained normally on Moon, its test set, and the same model wrapped for ART."""
    torch.set_num_threads(1)
    config = TrainConfig(model="model_a", dataset="moons", epochs=15, batch_size=32, lr=1e-2)
    model = train(config, None).model.eval()
    x, y = load_tensors("moons", "test")
    classifier = PyTorchClassifier(
        model=model, loss=nn.CrossEntropyLoss(), input_shape=(2,), nb_classes=2,
        clip_values=(0.0, 1.0), device_type="cpu",
    )  # fmt: skip
    return model, x, y, classifier


def _accuracy(model: nn.Module, x: torch.Tensor | np.ndarray, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(torch.as_tensor(x)).argmax(1) == y).float().mean())


@pytest.mark.parametrize("eps", [0.02, 0.05, 0.1])
def test_fgsm_examples_match_art(setup, eps: float) -> None:  # type: ignore[no-untyped-def]
    model, x, y, classifier = setup
    ours = FGSM(model, eps=eps)(x, y).numpy()
    theirs = FastGradientMethod(classifier, norm=np.inf, eps=eps).generate(x.numpy(), y=y.numpy())
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("eps", [0.03, 0.06])
def test_pgd_robust_accuracy_matches_art(setup, eps: float) -> None:  # type: ignore[no-untyped-def]
    model, x, y, classifier = setup
    step, steps = eps / 4, 20
    ours = PGD(model, eps=eps, alpha=step, steps=steps, random_start=False)(x, y)
    theirs = ProjectedGradientDescent(
        classifier, norm=np.inf, eps=eps, eps_step=step, max_iter=steps, num_random_init=0,
        batch_size=len(x), verbose=False,
    ).generate(x.numpy(), y=y.numpy())  # fmt: skip
    clean = _accuracy(model, x, y)
    ours_acc, theirs_acc = _accuracy(model, ours, y), _accuracy(model, theirs, y)
    assert ours_acc < clean  # the attack does something
    assert ours_acc == theirs_acc


def test_apgd_ce_robust_accuracy_matches_art(setup) -> None:  # type: ignore[no-untyped-def]
    model, x, y, classifier = setup
    eps = 0.06
    ours = APGD(model, eps=eps, steps=100, loss="ce", seed=0)(x, y)
    state = np.random.get_state()  # ART draws its random start from NumPy's global generator
    np.random.seed(0)
    try:
        theirs = AutoProjectedGradientDescent(
            classifier, norm=np.inf, eps=eps, eps_step=2 * eps, max_iter=100, nb_random_init=1,
            loss_type="cross_entropy", batch_size=len(x), verbose=False,
        ).generate(x.numpy(), y=y.numpy())  # fmt: skip
    finally:
        np.random.set_state(state)
    ours_acc, theirs_acc = _accuracy(model, ours, y), _accuracy(model, theirs, y)
    assert ours_acc < _accuracy(model, x, y)
    assert abs(ours_acc - theirs_acc) <= 0.01, (ours_acc, theirs_acc)
