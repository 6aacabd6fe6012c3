"""Per-data-set recipes: which model, how to train it normally, and which perturbations LSA uses.

These are the defaults of ``lsakit analyze`` / ``lsakit train`` and ``make demo``. Where the paper
is silent (training hyper-parameters, noise strengths, η) the values below are our choices:

* Perturbation strengths are "comparable in size" between noise and attacks, as the paper's
  comparison needs: the noise standard deviation (or salt/pepper amount) is of the order of the
  attack budget ε. Budgets are in unit coordinates (inputs in [0, 1]). For Moon, ε = 0.03 in unit
  coordinates is ≈ 0.1 in raw ``make_moons`` coordinates (scale ≈ 3.4, ``lsakit.data.moons``).
* MNIST uses the standard ε = 0.3 (PGD-40, step 0.01, Madry et al.); CIFAR-10 ε = 8/255 (PGD-10,
  step 2/255).
* The MVL list is selected from the strongest attack's result (PGD), with η = ``DEFAULT_ETA``.
* ``train_eps`` is adversarial training's ε when ``--eps`` is not given: MNIST 0.3 and CIFAR-10
  8/255 (the field's standard budgets); Moon 0.05 in unit coordinates (≈ 0.17 raw), our choice —
  the paper does not publish its training ε.
"""

from __future__ import annotations

from dataclasses import dataclass

from lsakit.analysis import DEFAULT_ETA
from lsakit.errors import ConfigError
from lsakit.train.config import TrainConfig


@dataclass(frozen=True)
class Preset:
    """The recipe of one data set."""

    train: TrainConfig
    perturbations: tuple[str, ...]
    mvl_perturbation: str
    #: the ε of adversarial training when none is given
    train_eps: float
    eta: float = DEFAULT_ETA


PRESETS: dict[str, Preset] = {
    "moons": Preset(
        train=TrainConfig(
            model="model_a", dataset="moons", epochs=20, batch_size=32, optimizer="adam", lr=1e-2
        ),
        perturbations=(
            "gaussian=0.03",
            "salt=0.05",
            "pepper=0.05",
            "speckle=0.1",
            "fgsm=0.03",
            "pgd=0.03,steps=20",
        ),
        mvl_perturbation="pgd",
        train_eps=0.05,
    ),
    "mnist": Preset(
        train=TrainConfig(
            model="model_b", dataset="mnist", epochs=3, batch_size=128, optimizer="adam", lr=1e-3
        ),
        perturbations=(
            "gaussian=0.3",
            "salt=0.1",
            "pepper=0.1",
            "speckle=0.3",
            "fgsm=0.3",
            "pgd=0.3,steps=40,alpha=0.01",
        ),
        mvl_perturbation="pgd",
        train_eps=0.3,
    ),
    "fashion-mnist": Preset(
        train=TrainConfig(
            model="model_b",
            dataset="fashion-mnist",
            epochs=5,
            batch_size=128,
            optimizer="adam",
            lr=1e-3,
        ),
        perturbations=(
            "gaussian=0.1",
            "salt=0.05",
            "pepper=0.05",
            "speckle=0.2",
            "fgsm=0.1",
            "pgd=0.1,steps=40,alpha=0.005",
        ),
        mvl_perturbation="pgd",
        train_eps=0.1,
    ),
    "cifar10": Preset(
        train=TrainConfig(
            model="vgg19",
            dataset="cifar10",
            epochs=100,
            batch_size=128,
            optimizer="sgd",
            lr=0.05,
            weight_decay=5e-4,
        ),
        perturbations=(
            "gaussian=0.031",
            "salt=0.02",
            "pepper=0.02",
            "speckle=0.06",
            "fgsm=0.031",
            "pgd=0.031,steps=10,alpha=0.0078",
        ),
        mvl_perturbation="pgd",
        train_eps=8 / 255,
    ),
}


def preset(dataset: str) -> Preset:
    """The recipe for ``dataset``; ConfigError naming the data sets that have one."""
    try:
        return PRESETS[dataset]
    except KeyError:
        raise ConfigError(
            f"no preset for data set {dataset!r}; presets exist for {', '.join(PRESETS)}"
        ) from None
