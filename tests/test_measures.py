from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lsakit.errors import ConfigError, InputError, UndefinedMeasureError
from lsakit.measures import (
    compare,
    cosine_distance,
    linf_distance,
    measure_rows,
    mse,
    relative_error,
)


def test_relative_error_exact_values() -> None:
    clean = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    perturbed = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    # one Frobenius norm over the batch: ‖Δ‖ = 1, ‖clean‖ = √2
    assert relative_error(clean, perturbed, "batch").item() == pytest.approx(1 / math.sqrt(2))
    # per sample: [1, 0] → mean 0.5
    assert relative_error(clean, perturbed, "sample").item() == pytest.approx(0.5)
    assert relative_error(clean, perturbed, "none").tolist() == pytest.approx([1.0, 0.0])
    assert relative_error(torch.tensor([[3.0, 4.0]]), torch.zeros(1, 2)).item() == pytest.approx(1)


def test_batch_reduction_is_one_norm_over_the_whole_tensor() -> None:
    g = torch.Generator().manual_seed(1)
    clean = torch.randn(7, 3, 5, 5, generator=g)
    perturbed = clean + 0.3 * torch.randn(7, 3, 5, 5, generator=g)
    a, b = clean.double().numpy(), perturbed.double().numpy()
    expected = np.linalg.norm((a - b).ravel()) / np.linalg.norm(a.ravel())
    assert relative_error(clean, perturbed).item() == pytest.approx(expected, rel=1e-5)
    per_sample = [
        np.linalg.norm((a[i] - b[i]).ravel()) / np.linalg.norm(a[i].ravel()) for i in range(7)
    ]
    assert relative_error(clean, perturbed, "sample").item() == pytest.approx(
        np.mean(per_sample), rel=1e-5
    )


def test_other_measures_exact_values() -> None:
    clean = torch.tensor([[1.0, 0.0], [2.0, 2.0]])
    perturbed = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    assert mse(clean, perturbed).item() == pytest.approx((1 + 1 + 0 + 4) / 4)
    assert mse(clean, perturbed, "none").tolist() == pytest.approx([1.0, 2.0])
    assert linf_distance(clean, perturbed).item() == pytest.approx(2.0)
    assert linf_distance(clean, perturbed, "none").tolist() == pytest.approx([1.0, 2.0])
    # row 0 orthogonal → 1; row 1: cos = (4 + 8) / (√8 · √20)
    cos1 = 12 / (math.sqrt(8) * math.sqrt(20))
    assert cosine_distance(clean, perturbed, "none").tolist() == pytest.approx([1.0, 1 - cos1])
    whole = (0 + 0 + 4 + 8) / (3 * math.sqrt(21))
    assert cosine_distance(clean, perturbed).item() == pytest.approx(1 - whole)
    # a perturbation that wipes the representation out is at distance 1, not NaN
    assert cosine_distance(clean, torch.zeros(2, 2), "none").tolist() == pytest.approx([1.0, 1.0])


def test_identical_representations_give_zero() -> None:
    x = torch.rand(4, 6) + 0.1
    for name in ("relative_error", "mse", "cosine_distance", "linf"):
        assert compare(name, x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_all_zero_clean_is_reported_not_nan() -> None:
    zero = torch.zeros(3, 4)
    with pytest.raises(UndefinedMeasureError, match="all zero"):
        relative_error(zero, torch.ones(3, 4))
    partly = torch.ones(3, 4)
    partly[1] = 0
    with pytest.raises(UndefinedMeasureError, match="1 of 3 samples"):
        relative_error(partly, torch.ones(3, 4), "sample")
    values, defined = measure_rows("relative_error", partly, torch.ones(3, 4), "sample")
    assert defined.tolist() == [True, False, True]
    assert torch.isfinite(values).all()
    # mse and linf are defined everywhere
    assert mse(zero, torch.ones(3, 4)).item() == pytest.approx(1.0)


def test_relative_error_is_differentiable_through_both_arguments() -> None:
    clean = torch.tensor([[3.0, 4.0]], requires_grad=True)
    perturbed = torch.tensor([[3.0, 0.0]], requires_grad=True)
    relative_error(clean, perturbed).backward()
    # d/dp ‖c − p‖/‖c‖ = (p − c) / (‖c − p‖·‖c‖) = [0, −4] / (4·5)
    assert perturbed.grad is not None and clean.grad is not None
    assert perturbed.grad[0].tolist() == pytest.approx([0.0, -0.2])
    assert torch.isfinite(clean.grad).all()


def test_bad_arguments() -> None:
    with pytest.raises(InputError, match="differ in shape"):
        relative_error(torch.ones(2, 3), torch.ones(2, 4))
    with pytest.raises(ConfigError, match="unknown measure"):
        compare("l2ish", torch.ones(2, 3), torch.ones(2, 3))
    with pytest.raises(ConfigError, match="unknown reduction"):
        relative_error(torch.ones(2, 3), torch.ones(2, 3), "mean")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="empty"):
        relative_error(torch.ones(0, 3), torch.ones(0, 3))
