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

Data of your own (``folder:PATH``, tensor files; :mod:`lsakit.data.registry`) gets one generic
recipe, our choice, scaled to the data's input domain: no default model (pass ``--model``);
10 epochs of Adam (lr 1e-3, batch 64); strengths as for CIFAR-10 — ε = 8/255, PGD-10 with step
ε/4, Gaussian σ = ε, salt/pepper 0.02, speckle 2ε — times the width of a bounded domain (so
[0, 1] data gets CIFAR-10's values, [-1, 1] data twice them); for an unbounded domain (z-scores,
embeddings) ε = 0.1 in input units and no salt/pepper (they need the box's faces). The FGSM sweep
of ``lsakit evaluate`` is 0, ε/4, ε/2, ε, 2ε.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from lsakit.config.defaults import DEFAULT_ETA
from lsakit.config.train import TrainConfig, validate_config
from lsakit.errors import ConfigError

#: The data set of ``lsakit train`` / ``analyze`` (and of a YAML config) that names none.
DEFAULT_DATASET = "moons"


@dataclass(frozen=True)
class Preset:
    """The recipe of one data set."""

    train: TrainConfig
    perturbations: tuple[str, ...]
    mvl_perturbation: str
    #: the ε of adversarial training when none is given
    train_eps: float
    eta: float = DEFAULT_ETA
    #: the FGSM ε sweep of ``lsakit evaluate``; None = the paper's grid for the data set
    fgsm_eps: tuple[float, ...] | None = None


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


#: ε of the user-data recipe per unit of domain width (CIFAR-10's 8/255), and for unbounded data.
USER_EPS_PER_WIDTH = 8 / 255
USER_EPS_UNBOUNDED = 0.1
#: The training settings of the user-data recipe (it has no model: pass --model).
USER_TRAIN: dict[str, Any] = {"epochs": 10, "batch_size": 64, "optimizer": "adam", "lr": 1e-3}


def user_preset(dataset: str, **data_options: object) -> Preset:
    """The generic recipe for data of the user's (see the module docstring), scaled to the
    data set's domain (read with ``data_options``, e.g. ``domain``).

    Args:
        dataset: the user's data set, ``folder:PATH`` or a tensor file (as for
            :func:`lsakit.data.load`).
        data_options: the data set's options, as for :func:`lsakit.data.load`; they decide the
            input domain.

    Returns:
        The recipe: no model (``model=""``; pass one), 10 epochs of Adam, and ε, the noise
        strengths and the FGSM sweep scaled to the domain's width (ε = 0.1 for an unbounded one).
        Its training config does not carry ``data_options`` (:func:`preset` adds them).
    """
    from lsakit import data  # reads the data: torch, imported only for data of the user's

    domain = data.domain(dataset, **data_options)
    eps = USER_EPS_PER_WIDTH * domain.width() if domain.bounded else USER_EPS_UNBOUNDED
    # salt and pepper write the box's faces: only for a bounded domain
    faces = ("salt=0.02", "pepper=0.02") if domain.bounded else ()
    noise = (f"gaussian={eps:.4g}", *faces, f"speckle={2 * eps:.4g}")
    return Preset(
        train=TrainConfig(model="", dataset=dataset, **USER_TRAIN),
        perturbations=(*noise, f"fgsm={eps:.4g}", f"pgd={eps:.4g},steps=10,alpha={eps / 4:.4g}"),
        mvl_perturbation="pgd",
        train_eps=eps,
        fgsm_eps=(0.0, eps / 4, eps / 2, eps, 2 * eps),
    )


def preset(dataset: str, **data_options: object) -> Preset:
    """The recipe for ``dataset``; ConfigError naming the data sets that have one.

    Data of the user's (``folder:PATH``, tensor files) gets :func:`user_preset`, scaled to its
    domain (``data_options`` as for :func:`lsakit.data.load`); registered data sets ignore them.

    Args:
        dataset: a key of :data:`PRESETS` (spelled exactly so) or data of the user's.
        data_options: the data set's options; for data of the user's, they decide the domain and
            are set in the recipe's training config.

    Returns:
        The data set's :class:`Preset` (the shared object of :data:`PRESETS` for a registered
        one).
    """
    if dataset in PRESETS:  # no registered name is data of the user's: no need for lsakit.data
        return PRESETS[dataset]
    from lsakit.data import is_user_dataset  # torch: imported only for the other names

    if is_user_dataset(dataset):
        recipe = user_preset(dataset, **data_options)
        return replace(recipe, train=recipe.train.with_overrides(data_options=data_options))
    raise ConfigError(
        f"no preset for data set {dataset!r}; presets exist for {', '.join(PRESETS)} (and "
        f"your own data: folder:PATH or a .npz/.safetensors/.pt file)"
    )


def train_config(values: Mapping[str, Any], *, source: str = "options") -> TrainConfig:
    """The one route to a run's config: the data set's preset, then ``values`` over it.

    ``lsakit train``'s flags and YAML config files (:func:`lsakit.config.load_config`) both come
    here, so the same options give the same config: no ``dataset`` is moons, no ``model`` the
    data set's, unset options the preset's (moons: lr 0.01, batch 32, 20 epochs), and an
    adversarial ``method`` without ``eps`` trains at the preset's ε. Errors are one ConfigError
    line naming the option and ``source``.

    Args:
        values: the options given (option → value, as in a YAML config file); they replace the
            preset's whole, a mapping option included.
        source: where the options came from (e.g. a file's path), named in errors.

    Returns:
        The validated config.
    """
    dataset = values.get("dataset", DEFAULT_DATASET)
    options = values.get("data_options") or {}
    if not isinstance(dataset, str) or not isinstance(options, dict):
        return validate_config(dict(values), source=source)  # the type error, named
    recipe = preset(dataset, **options)
    merged = {**recipe.train.model_dump(), **values, "dataset": dataset}
    if merged.get("method", "standard") != "standard" and "eps" not in values:
        merged["eps"] = recipe.train_eps
    return validate_config(merged, source=source)


__all__ = [
    "DEFAULT_DATASET",
    "PRESETS",
    "USER_EPS_PER_WIDTH",
    "USER_EPS_UNBOUNDED",
    "USER_TRAIN",
    "Preset",
    "preset",
    "train_config",
    "user_preset",
]
