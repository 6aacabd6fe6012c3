"""Gradient-masking checks (lsakit.masking): they fire on masked models and stay quiet on model B."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lsakit import data, models
from lsakit.masking import (
    check_black_box,
    check_determinism,
    check_gradients,
    check_logits,
    growth_grid,
    margin_gradients,
    masking_checks,
)
from lsakit.suite import SuiteAttackResult, SuiteResult


class Round8Bit(nn.Module):
    """Quantize the input to 8 bits: a non-differentiable step (its gradient is 0 everywhere)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.round(x * 255) / 255


class Noisy(nn.Module):
    """A randomized model: Gaussian noise on the input at every forward pass, even in eval mode."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x + 0.1 * torch.randn_like(x))
        return out


@pytest.fixture(scope="module")
def mnist_model_b(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path
) -> tuple[nn.Module, Tensor, Tensor]:
    """Model B after one epoch of normal training on 2000 real MNIST images, and 128 test images."""
    torch.manual_seed(0)
    model = models.build("model_b")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x_train, y_train = data.load_tensors("mnist", "train", limit=2000, data_dir=shared_data)
    for start in range(0, 2000, 50):
        loss = F.cross_entropy(model(x_train[start : start + 50]), y_train[start : start + 50])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, y = data.load_tensors("mnist", "test", limit=128, data_dir=shared_data)
    return model.eval(), x, y


def statuses(outcomes: list) -> dict[str, str]:  # type: ignore[type-arg]
    return {o.name: o.status for o in outcomes}


def test_checks_are_quiet_on_model_b(mnist_model_b: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = mnist_model_b
    outcomes = masking_checks(model, x, y, eps=0.3, n=64)
    assert statuses(outcomes) == {
        "logits": "pass",
        "determinism": "pass",
        "gradients": "pass",
        "eps-growth": "pass",
    }
    growth = next(o for o in outcomes if o.name == "eps-growth")
    assert "ε = 0.3:" in growth.evidence and "1: 0.0%" in growth.evidence


def test_checks_fire_on_an_8_bit_rounding_input_step(
    mnist_model_b: tuple[nn.Module, Tensor, Tensor],
) -> None:
    model, x, y = mnist_model_b
    masked = nn.Sequential(Round8Bit(), model)
    outcomes = {o.name: o for o in masking_checks(masked, x, y, eps=0.3, n=64)}
    assert outcomes["gradients"].status == "warn"
    assert "64 of 64 samples have an all-zero input gradient" in outcomes["gradients"].evidence
    assert outcomes["eps-growth"].status == "warn"
    assert "where every input is reachable" in outcomes["eps-growth"].evidence
    assert outcomes["determinism"].status == "pass"  # rounding is deterministic


def test_gradient_check_counts_nan_and_zero_gradients() -> None:
    class HalfDead(nn.Module):  # samples with x[:, 0] > 0.5 get a constant output
        def forward(self, x: Tensor) -> Tensor:
            live = (x[:, :1] <= 0.5).float()
            return torch.cat([x * live, -x * live], dim=1)[:, :3] + torch.tensor([0.0, 0.1, 0.2])

    x = torch.tensor([[0.2, 0.3], [0.9, 0.3], [0.7, 0.1], [0.1, 0.6]])
    y = torch.tensor([0, 1, 2, 0])
    outcome = check_gradients(HalfDead(), x, y)
    assert outcome.status == "warn"
    assert outcome.evidence.startswith("2 of 4 samples have an all-zero input gradient")

    class Sqrt(nn.Module):  # d√x/dx is inf at 0
        def forward(self, x: Tensor) -> Tensor:
            return torch.stack([x.sqrt().sum(1), -x.sum(1)], dim=1)

    outcome = check_gradients(Sqrt(), torch.tensor([[0.0, 0.5], [0.2, 0.5]]), torch.tensor([0, 0]))
    assert "1 of 2 have NaN/inf input gradients" in outcome.evidence


def test_margin_gradient_is_exact_and_leaves_parameters_alone() -> None:
    layer = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0]]))
    x = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.1, 0.9]])
    y = torch.tensor([0, 0])
    grad = margin_gradients(layer, x, y)
    # sample 0: z = (0.9, 0.2, 0.3): margin z₀ − z₂ → (1, 0, −3); sample 1: z₀ − z₂ again.
    assert torch.equal(grad, torch.tensor([[1.0, 0.0, -3.0], [1.0, 0.0, -3.0]]))
    assert layer.weight.grad is None


def test_determinism_warns_on_a_randomized_model_unless_the_rand_suite_runs() -> None:
    model = Noisy(nn.Linear(4, 3))
    x = torch.rand(8, 4)
    warned = check_determinism(model, x)
    assert warned.status == "warn" and "--suite rand" in warned.advice
    assert check_determinism(model, x, randomized_suite=True).status == "pass"
    assert check_determinism(nn.Linear(4, 3), x).status == "pass"


def test_logits_check_recognises_a_softmax_output() -> None:
    net = nn.Linear(4, 3)
    x = torch.rand(8, 4)
    assert check_logits(nn.Sequential(net, nn.Softmax(dim=1)), x).status == "warn"
    assert check_logits(net, x).status == "pass"


def _suite_result(square_fooled: int, n: int = 1000) -> SuiteResult:
    white_robust = 0.80
    rows = [
        SuiteAttackResult(label="APGD-CE", params={}, attacked=950, fooled=150,
                          robust_accuracy=white_robust, seconds=1.0),
        SuiteAttackResult(label="Square", params={}, attacked=800, fooled=square_fooled,
                          robust_accuracy=white_robust - square_fooled / n, seconds=1.0),
    ]  # fmt: skip
    return SuiteResult(
        suite="standard", eps=0.3, n_examples=n, batch_size=100, seed=0, clean_accuracy=0.95,
        attacks=rows, robust_accuracy=white_robust - square_fooled / n, fooled_by=[-1] * n,
    )  # fmt: skip


def test_black_box_check_uses_autoattacks_tolerance() -> None:
    assert check_black_box(_suite_result(2)).status == "pass"  # 0.2 %: within tolerance
    warned = check_black_box(_suite_result(3))
    assert warned.status == "warn"
    assert "Square fooled 3 of the points APGD-CE left robust (0.30% of 1000" in warned.evidence
    only_white = _suite_result(0).model_copy(update={"attacks": _suite_result(0).attacks[:1]})
    assert check_black_box(only_white).status == "skip"


def test_growth_grid_doubles_up_to_the_whole_box() -> None:
    assert growth_grid(0.3) == [0.3, 0.6, 1.0]
    assert growth_grid(8 / 255) == pytest.approx(
        [8 / 255, 16 / 255, 32 / 255, 64 / 255, 128 / 255, 1.0]
    )
    assert growth_grid(1.0) == [1.0]


def test_checks_on_a_model_that_gets_everything_wrong_skip_the_gradient_ones(
    tmp_path: Path,
) -> None:
    model = nn.Linear(4, 3)
    x = torch.rand(6, 4)
    y = (model(x).argmax(dim=1) + 1) % 3
    outcomes = statuses(masking_checks(model, x, y, eps=0.1))
    assert outcomes["gradients"] == "skip"
    assert "eps-growth" not in outcomes
