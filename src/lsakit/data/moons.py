"""The two-moons data set of the paper's first experiment (Khalooei et al., 2022, Table 2).

Points come from :func:`sklearn.datasets.make_moons` and are split into a fixed, stratified
train/test split determined by ``seed`` (default 1500 points → 1000 train / 500 test).

Every stage of lsakit expects inputs in [0, 1], so the raw coordinates are mapped there with ONE
isotropic affine map ``x_unit = (x_raw - offset) / scale``:

- ``offset`` is the per-feature minimum over all generated points (train ∪ test);
- ``scale`` is the largest per-feature range, the same for both features.

A single scale keeps the L∞ geometry: an L∞ ball of radius ε_raw in raw coordinates is exactly
the L∞ ball of radius ``ε_unit = ε_raw / scale`` in unit coordinates, so the paper's raw-coordinate
perturbation budgets convert with :func:`moons_scale` (the widest feature spans exactly [0, 1],
the other a sub-interval of it).

Two other coordinate systems, for unbounded-domain work (the paper's own Moon inputs are real
coordinates, not pixels): ``standardized`` — per-feature z-scores ``(x_raw − mean) / std`` with the
*training* split's mean and population standard deviation (scikit-learn's StandardScaler fitted on
the training data), and ``raw`` — make_moons' coordinates unchanged. Both are unbounded inputs
(the registry declares their domain unbounded), and their ``offset``/``scale`` describe the same
map back to raw coordinates (``scale`` per feature for standardized).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
import torch

#: Defaults: 1500 points, a third of them for testing, Gaussian noise of standard deviation 0.1.
DEFAULT_N_SAMPLES = 1500
DEFAULT_NOISE = 0.1
DEFAULT_SEED = 0
TEST_FRACTION = 1 / 3
#: The smallest size for which a stratified split puts both classes in both splits.
MIN_N_SAMPLES = 6
Coordinates: TypeAlias = Literal["unit", "standardized", "raw"]
COORDINATES: tuple[Coordinates, ...] = ("unit", "standardized", "raw")


@dataclass(frozen=True)
class MoonsSplit:
    """A generated two-moons split in unit coordinates, with the map back to raw coordinates.

    ``x_*`` are float32 of shape (N, 2) in [0, 1]; ``y_*`` int64 of shape (N,) in {0, 1}.
    Raw coordinates are ``x_unit * scale + offset``.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    offset: tuple[float, float]
    scale: float
    #: per-feature scales (both equal to ``scale`` except for standardized coordinates)
    feature_scale: tuple[float, float] = (1.0, 1.0)


def make_moons_split(
    n_samples: int = DEFAULT_N_SAMPLES,
    noise: float = DEFAULT_NOISE,
    seed: int = DEFAULT_SEED,
    *,
    coordinates: Coordinates = "unit",
) -> MoonsSplit:
    """Generate the two moons, split them (stratified, fixed by ``seed``), map them into [0, 1]
    (or, with ``coordinates``, standardize them or keep them raw).

    The same arguments always give identical tensors; see the module docstring for the maps.

    Args:
        n_samples: number of points generated, train and test together (a third of them, rounded
            up, is the test split).
        noise: standard deviation of the Gaussian noise make_moons adds, in raw coordinates.
        seed: seeds both the generator and the stratified train/test split.
        coordinates: ``unit`` (the isotropic map into [0, 1]), ``standardized`` (z-scores with
            the training split's mean and std) or ``raw`` (make_moons' coordinates).

    Returns:
        The split: ``x_*`` float32 ``(N, 2)``, ``y_*`` int64 ``(N,)`` in {0, 1}, and the
        ``offset``/``scale`` (``feature_scale`` per feature) that map the inputs back to raw
        coordinates.

    Raises:
        ValueError: ``coordinates`` is not one of :data:`COORDINATES`.
    """
    if coordinates not in COORDINATES:
        raise ValueError(f"coordinates must be one of {COORDINATES}, got {coordinates!r}")
    # Imported here: sklearn takes about a second to import, which only moons users should pay.
    from sklearn.datasets import make_moons
    from sklearn.model_selection import train_test_split

    points, labels = make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    raw = np.asarray(points, dtype=np.float64)
    offset = raw.min(axis=0)
    scale = float((raw.max(axis=0) - offset).max())
    # Computed in float64 and cast once, so the widest feature's extremes land exactly on 0 and 1.
    unit = ((raw - offset) / scale).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        unit,
        np.asarray(labels, dtype=np.int64),
        test_size=TEST_FRACTION,
        stratify=labels,
        random_state=seed,
    )
    feature_scale = (scale, scale)
    if coordinates != "unit":
        # The same split (train_test_split permutes indices alike whatever the arrays hold),
        # taken from the raw float64 points.
        index_train, index_test = train_test_split(
            np.arange(len(raw)), test_size=TEST_FRACTION, stratify=labels, random_state=seed
        )
        raw_train, raw_test = raw[index_train], raw[index_test]
        if coordinates == "standardized":
            mean, std = raw_train.mean(axis=0), raw_train.std(axis=0)
            raw_train, raw_test = (raw_train - mean) / std, (raw_test - mean) / std
            offset, feature_scale = mean, (float(std[0]), float(std[1]))
        else:
            offset, feature_scale = np.zeros(2), (1.0, 1.0)
        scale = max(feature_scale)
        x_train, x_test = raw_train.astype(np.float32), raw_test.astype(np.float32)
    return MoonsSplit(
        x_train=torch.from_numpy(np.ascontiguousarray(x_train)),
        y_train=torch.from_numpy(np.ascontiguousarray(y_train)),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test)),
        y_test=torch.from_numpy(np.ascontiguousarray(y_test)),
        offset=(float(offset[0]), float(offset[1])),
        scale=scale,
        feature_scale=feature_scale,
    )


def moons_scale(
    n_samples: int = DEFAULT_N_SAMPLES, noise: float = DEFAULT_NOISE, seed: int = DEFAULT_SEED
) -> float:
    """Raw-coordinate length of one unit: convert a paper ε with ``ε_unit = ε_raw / scale``.

    Args:
        n_samples: number of points generated, as for :func:`make_moons_split`.
        noise: standard deviation of make_moons' Gaussian noise, as for :func:`make_moons_split`.
        seed: the data seed, as for :func:`make_moons_split`.

    Returns:
        The scale of the unit coordinates: the largest per-feature range of the raw points
        (train and test together).
    """
    return make_moons_split(n_samples, noise, seed).scale
