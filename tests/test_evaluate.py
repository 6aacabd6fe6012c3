"""The paper's evaluation protocol: FGSM sweep, R&G score, robust accuracy, result files."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from torch import Tensor, nn

from helpers import tiny_cnn, tiny_mlp
from lsakit import models
from lsakit.data import load_tensors, moons_scale
from lsakit.errors import ArgumentError, ConfigError, InputError, ResultsError
from lsakit.evaluate import (
    DEFAULT_FGSM_EPS,
    PAPER_EPS,
    TABLE_HEADER,
    EvaluationResult,
    SweepPoint,
    evaluate,
    fgsm_sweep,
    paper_eps,
    rg_score,
    robust_accuracy,
)
from lsakit.perturb import FGSM, PGD, GaussianNoise

Batches = list[tuple[Tensor, Tensor]]

# --------------------------------------------------------------------------------------------
# Fixtures and small models
# --------------------------------------------------------------------------------------------


def _batches(x: Tensor, y: Tensor, size: int) -> Batches:
    return list(zip(x.split(size), y.split(size), strict=True))


@pytest.fixture(scope="module")
def moon() -> tuple[nn.Module, Batches]:
    """Model A trained normally on the two moons (300 seeded Adam steps, ≈ 98% test accuracy)."""
    torch.manual_seed(0)
    x, y = load_tensors("moons", "train")
    x_test, y_test = load_tensors("moons", "test")
    model = models.build("model_a")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        idx = torch.randint(0, x.shape[0], (64,), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, _batches(x_test, y_test, 128)


def threshold_model() -> nn.Linear:
    """1-D inputs, 2 classes: logit₁ − logit₀ = 2x − 1, so class 1 iff x > 0.5."""
    model = nn.Linear(1, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-1.0], [1.0]]))
        model.bias.copy_(torch.tensor([0.5, -0.5]))
    return model


class Counting(nn.Module):
    """Wraps a model; counts forwards with and without an input that requires grad."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.grad_forwards = 0
        self.plain_forwards = 0

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.grad_forwards += 1
        else:
            self.plain_forwards += 1
        out: Tensor = self.inner(x)
        return out


def _clean_accuracy(model: nn.Module, data: Batches) -> float:
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in data)
    return correct / sum(len(y) for _, y in data)


# --------------------------------------------------------------------------------------------
# R&G score
# --------------------------------------------------------------------------------------------

# Every row of the paper's Tables 2–4 (lsa-at-lr.md §7): FGSM accuracies (%) and the R&G column.
PUBLISHED_ROWS: dict[str, tuple[list[float], float]] = {
    "moon normal": ([97.07, 93.63, 82.5, 76.83, 63.79, 52.35], 466.17),
    "moon AT-FGSM": ([95.86, 91.98, 87.88, 81.33, 70.54, 58.69], 486.28),
    "moon AT-PGD": ([86.5, 83.89, 80.87, 76.61, 72.57, 60.02], 460.46),
    "moon AT-TRADE": ([96.17, 93.06, 85.78, 74.2, 68.62, 59.68], 477.51),
    "moon AT-FAST": ([94.32, 89.72, 84.91, 78.35, 70.18, 61.65], 479.13),
    "moon AT-FGSM-LR-L0": ([92.81, 90.25, 85.36, 80.74, 68.21, 58.74], 476.11),
    "moon AT-FGSM-LR-L1": ([91.87, 89.77, 86.95, 81.51, 69.15, 59.59], 478.84),
    "moon AT-FGSM-LR-L2": ([93.98, 93.01, 89.12, 84.01, 75.15, 63.25], 498.52),
    "moon AT-PGD-LR-L0": ([87.02, 84.02, 80.64, 76.22, 71.12, 65.87], 464.89),
    "moon AT-PGD-LR-L1": ([86.2, 82.94, 79.23, 75.16, 70.5, 65.04], 459.07),
    "moon AT-PGD-LR-L2": ([88.78, 86.93, 81.25, 77.01, 72.81, 66.58], 473.36),
    "moon AT-FAST-LR-L0": ([86.86, 83.85, 80.33, 76.34, 71.34, 65.79], 464.51),
    "moon AT-FAST-LR-L1": ([87.91, 85.43, 82.44, 77.38, 70.01, 62.25], 465.42),
    "moon AT-FAST-LR-L2": ([92.91, 90.31, 86.26, 81.53, 75.09, 67.65], 493.75),
    "moon AT-TRADE-LR-L0": ([86.84, 82.38, 80.55, 76.37, 71.58, 64.07], 461.79),
    "moon AT-TRADE-LR-L1": ([87.25, 84.22, 81.25, 76.98, 71.14, 63.25], 464.09),
    "moon AT-TRADE-LR-L2": ([96.67, 93.2, 86.56, 81.25, 79.5, 68.65], 505.83),
    "mnist normal": ([98.82, 82.1, 47.2, 17.87, 6.96, 4.25], 257.2),
    "mnist AT-APGD": ([99.36, 98.54, 97.67, 96.97, 71.72, 33.73], 497.99),
    "mnist AT-APGD-LR-L0": ([98.97, 98.11, 97.36, 97.17, 94.6, 55.52], 541.73),
    "cifar VGG normal": ([90.53, 48.91, 43.91, 31.5, 22.29], 237.14),
    "cifar VGG AT-APGD": ([83.68, 74.69, 72.21, 50.04, 41.45], 322.07),
    "cifar VGG AT-APGD-LR-L1": ([83.55, 75.32, 73.35, 52.36, 46.01], 330.59),
    "cifar WRN normal": ([90.01, 40.01, 36.35, 22.3, 16.2], 204.87),
    "cifar WRN AT-APGD": ([82.60, 50.12, 47.11, 41.46, 40.01], 261.3),
    "cifar WRN AT-APGD-LR-L1": ([81.81, 53.21, 48.17, 43.01, 42.65], 268.85),
}


@pytest.mark.parametrize("row", list(PUBLISHED_ROWS))
def test_rg_score_reproduces_every_published_row(row: str) -> None:
    percents, published = PUBLISHED_ROWS[row]
    dataset = "cifar10" if row.startswith("cifar") else "mnist"
    grid = PAPER_EPS[dataset]
    score = rg_score({e: p / 100 for e, p in zip(grid, percents, strict=True)})
    assert round(score, 2) == published
    assert score == pytest.approx(published, abs=1e-9)


def test_rg_score_normal_moon_and_at_apgd_mnist_exact() -> None:
    normal_moon = [0.9707, 0.9363, 0.825, 0.7683, 0.6379, 0.5235]
    at_apgd = [0.9936, 0.9854, 0.9767, 0.9697, 0.7172, 0.3373]
    assert round(rg_score(dict(zip(PAPER_EPS["moons"], normal_moon, strict=True))), 2) == 466.17
    assert round(rg_score(dict(zip(PAPER_EPS["mnist"], at_apgd, strict=True))), 2) == 497.99


def test_rg_score_is_in_percent_and_rejects_bad_input() -> None:
    assert rg_score({0.0: 1.0, 0.1: 1.0, 0.2: 0.5}) == 250.0
    with pytest.raises(InputError, match="not percentages"):
        rg_score({0.0: 97.07})
    with pytest.raises(InputError, match="at least one"):
        rg_score({})
    with pytest.raises(InputError):
        rg_score({0.0: float("nan")})


# --------------------------------------------------------------------------------------------
# ε grids
# --------------------------------------------------------------------------------------------


def test_paper_eps_grids() -> None:
    assert paper_eps("mnist") == (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    assert paper_eps("Fashion_MNIST") == PAPER_EPS["fashion-mnist"]
    assert paper_eps("cifar10") == (0.0, 0.01, 0.03, 0.1, 0.2)
    # Moon: raw make_moons ε divided by the isotropic scale of lsakit's [0, 1] map.
    assert paper_eps("moons", moons_scale=2.0) == (0.0, 0.05, 0.1, 0.15, 0.2, 0.25)
    scale = moons_scale()
    assert paper_eps("moon") == tuple(e / scale for e in PAPER_EPS["moons"])
    assert 3.0 < scale < 4.0
    # standardized (the paper protocol) and raw coordinates: the published ε as they are
    assert paper_eps("moons", coordinates="standardized") == PAPER_EPS["moons"]
    assert paper_eps("moons", coordinates="raw") == PAPER_EPS["moons"]


def test_paper_eps_errors() -> None:
    with pytest.raises(ConfigError, match="known: moons, mnist"):
        paper_eps("svhn")
    with pytest.raises(ConfigError, match="moons grid only"):
        paper_eps("mnist", moons_scale=3.0)
    with pytest.raises(ConfigError, match="> 0"):
        paper_eps("moons", moons_scale=0.0)
    with pytest.raises(InputError):
        paper_eps("moons", moons_scale=-1.0)
    with pytest.raises(ConfigError, match="coordinates must be one of"):
        paper_eps("moons", coordinates="polar")
    with pytest.raises(ConfigError, match="unit coordinates only"):
        paper_eps("moons", moons_scale=3.0, coordinates="standardized")
    with pytest.raises(ConfigError, match="moons grid only"):
        paper_eps("mnist", coordinates="standardized")


# --------------------------------------------------------------------------------------------
# FGSM sweep
# --------------------------------------------------------------------------------------------


def test_fgsm_sweep_exact_on_a_threshold_model() -> None:
    # Class 0 points are pushed up (+ε), class 1 points down (−ε); a point is wrong once it
    # crosses 0.5. Values chosen so that no x ± ε lands on 0.5.
    x = torch.tensor([[0.08], [0.32], [0.45], [0.62], [0.77], [0.95]])
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    grid = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    # ε=.1: .55 wrong → 5/6; ε=.2: .52, .65 and .42 wrong → 3/6; ε=.3: .62, .75, .32, .47 wrong
    # → 2/6; ε=.4: .08+.4=.48 and .95−.4=.55 right → 2/6; ε=.5: all wrong.
    expected = [1.0, 5 / 6, 3 / 6, 2 / 6, 2 / 6, 0.0]
    for size in (1, 4, 6):
        result = fgsm_sweep(threshold_model(), _batches(x, y, size), grid)
        assert list(result) == list(grid)
        assert list(result.values()) == pytest.approx(expected, abs=1e-12)
    assert rg_score(dict(zip(grid, expected, strict=True))) == pytest.approx(300.0)


def test_fgsm_sweep_equals_separate_fgsm_runs(moon: tuple[nn.Module, Batches]) -> None:
    model, data = moon
    grid = (*paper_eps("moons"), 0.3, 1.0)
    sweep = fgsm_sweep(model, data, grid)
    n = sum(len(y) for _, y in data)
    for eps in grid:
        attack = FGSM(model, eps=eps)
        correct = 0
        for x, y in data:
            x_adv = attack(x, y)
            # The same point as the sweep's reused direction, bit for bit.
            direction = FGSM(model, eps=0.0).direction(x, y)
            assert torch.equal(x_adv, FGSM.step(x, direction, eps))
            with torch.no_grad():
                correct += int((model(x_adv).argmax(1) == y).sum())
        assert sweep[eps] == correct / n
    assert sweep[0.0] == _clean_accuracy(model, data)
    assert sweep[0.0] > 0.95  # the fixture's model is trained; otherwise this test proves little
    assert sweep[1.0] < sweep[0.0]


def test_fgsm_sweep_takes_one_gradient_per_batch(moon: tuple[nn.Module, Batches]) -> None:
    counting = Counting(moon[0])
    data = moon[1]
    grid = paper_eps("moons")
    fgsm_sweep(counting, data, grid)
    assert counting.grad_forwards == len(data)
    assert counting.plain_forwards == len(data) * len(grid)


def test_evaluate_costs_no_extra_forward_when_the_grid_has_zero(
    moon: tuple[nn.Module, Batches],
) -> None:
    counting = Counting(moon[0])
    data = moon[1]
    evaluate(counting, data, fgsm_eps=(0.0, 0.1))
    assert (counting.grad_forwards, counting.plain_forwards) == (len(data), 2 * len(data))
    counting = Counting(moon[0])
    evaluate(counting, data, fgsm_eps=(0.1,))  # no ε = 0: one clean forward per batch
    assert (counting.grad_forwards, counting.plain_forwards) == (len(data), 2 * len(data))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 40),
    dim=st.integers(1, 6),
    eps=st.lists(st.floats(0, 1, allow_nan=False), min_size=2, max_size=8, unique=True),
)
def test_fgsm_sweep_is_monotone_for_a_linear_model(
    seed: int, n: int, dim: int, eps: list[float]
) -> None:
    # Two classes, linear logits: sign(∇ₓCE) lowers the true-class margin coordinate by
    # coordinate, and clamping only stops a coordinate, so correctness can only be lost as ε grows.
    gen = torch.Generator().manual_seed(seed)
    model = nn.Linear(dim, 2)
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, dim, generator=gen) * 3)
        model.bias.copy_(torch.randn(2, generator=gen))
    x = torch.rand(n, dim, generator=gen)
    y = torch.randint(0, 2, (n,), generator=gen)
    grid = sorted(eps)
    result = fgsm_sweep(model, _batches(x, y, 7), grid)
    values = [result[e] for e in grid]
    assert all(a >= b for a, b in itertools.pairwise(values))


# --------------------------------------------------------------------------------------------
# Robust accuracy
# --------------------------------------------------------------------------------------------


def test_only_correct_agrees_with_attacking_everything_for_a_deterministic_attack() -> None:
    # A linear two-class model under PGD from x: every step lowers the true-class margin, so a
    # clean error stays an error and skipping it changes nothing.
    gen = torch.Generator().manual_seed(3)
    model = nn.Linear(5, 2)
    with torch.no_grad():  # logit₁ − logit₀ = Σx − 2.5: the labels' rule, without their noise
        model.weight.copy_(torch.tensor([[0.0] * 5, [1.0] * 5]))
        model.bias.copy_(torch.tensor([0.0, -2.5]))
    x = torch.rand(60, 5, generator=gen)
    y = (x.sum(1) + 0.3 * torch.randn(60, generator=gen) > 2.5).long()
    data = _batches(x, y, 16)
    pgd = PGD(model, eps=0.05, steps=5, random_start=False)
    clean = _clean_accuracy(model, data)
    only = robust_accuracy(model, data, pgd, only_correct=True)
    every = robust_accuracy(model, data, pgd, only_correct=False)
    assert only == every
    assert 0 < only < clean < 1  # the attack and the clean errors both matter here


def test_robust_accuracy_attacks_only_the_correct_samples(
    moon: tuple[nn.Module, Batches],
) -> None:
    model, data = moon
    seen: list[int] = []

    def recording(x: Tensor, y: Tensor) -> Tensor:
        seen.append(x.shape[0])
        return x

    # The identity "attack" leaves accuracy at clean accuracy, in both modes.
    clean = _clean_accuracy(model, data)
    n = sum(len(y) for _, y in data)
    assert robust_accuracy(model, data, recording) == clean
    assert sum(seen) == round(clean * n) < n
    seen.clear()
    assert robust_accuracy(model, data, recording, only_correct=False) == clean
    assert sum(seen) == n


def test_all_samples_mode_is_the_fgsm_sweep_and_bounds_the_default(
    moon: tuple[nn.Module, Batches],
) -> None:
    model, data = moon
    for eps in (0.05, 0.3):
        plain = robust_accuracy(model, data, FGSM(model, eps=eps), only_correct=False)
        assert plain == fgsm_sweep(model, data, [eps])[eps]
        assert robust_accuracy(model, data, FGSM(model, eps=eps)) <= plain


def test_pgd_is_at_least_as_strong_as_fgsm_on_a_trained_moon_model(
    moon: tuple[nn.Module, Batches],
) -> None:
    model, data = moon
    grid = paper_eps("moons")
    for eps in grid[1:4]:
        pgd = PGD(model, eps=eps, steps=20, random_start=False)
        result = evaluate(model, data, fgsm_eps=[eps], attacks={"pgd": pgd}, only_correct=False)
        fgsm_acc = result.fgsm_accuracies()[eps]
        assert result.attacks["pgd"].accuracy <= fgsm_acc
        assert fgsm_acc < result.clean_accuracy


# --------------------------------------------------------------------------------------------
# evaluate() and its result
# --------------------------------------------------------------------------------------------


def test_evaluate_agrees_with_the_separate_functions(moon: tuple[nn.Module, Batches]) -> None:
    model, data = moon
    grid = paper_eps("moons")
    pgd = PGD(model, eps=grid[2], steps=10, random_start=False)
    result = evaluate(model, data, fgsm_eps=grid, attacks={"pgd-10": pgd}, meta={"model": "A"})
    sweep = fgsm_sweep(model, data, grid)
    assert result.fgsm_accuracies() == sweep
    assert result.rg_score == rg_score(sweep)
    assert result.clean_accuracy == sweep[0.0] == _clean_accuracy(model, data)
    assert result.n_samples == 500
    assert result.attacks["pgd-10"].accuracy == robust_accuracy(model, data, pgd)
    assert result.attacks["pgd-10"].params["steps"] == 10
    assert result.attacks["pgd-10"].only_correct is True
    assert result.meta == {"model": "A"}


def test_evaluate_defaults_and_limits(moon: tuple[nn.Module, Batches]) -> None:
    model, data = moon
    result = evaluate(model, data, max_batches=2)
    assert [p.eps for p in result.fgsm] == list(DEFAULT_FGSM_EPS)
    assert result.n_samples == 256
    assert result.attacks == {}


def test_table_rows() -> None:
    x = torch.tensor([[0.08], [0.32], [0.45], [0.62], [0.77], [0.95]])
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    model = threshold_model()
    noise = GaussianNoise(std=0.0)
    result = evaluate(model, [(x, y)], fgsm_eps=(0.1, 0.2), attacks={"noise": noise})
    rows = result.table_rows()
    assert len(TABLE_HEADER) == 3
    assert rows[0] == ("clean", "", "100.00")  # the grid has no ε = 0, so clean is its own row
    assert rows[1] == ("FGSM", "eps=0.1", "83.33")
    assert rows[2] == ("FGSM", "eps=0.2", "50.00")
    assert rows[3] == ("R&G", "sum of 2 FGSM accuracies", "133.33")
    assert rows[4][0] == "noise" and rows[4][2] == "100.00" and "std=0" in rows[4][1]
    with_zero = evaluate(model, [(x, y)], fgsm_eps=(0.0, 0.1))
    assert [r[0] for r in with_zero.table_rows()] == ["FGSM", "FGSM", "R&G"]


def test_json_round_trip(moon: tuple[nn.Module, Batches], tmp_path: Path) -> None:
    model, data = moon
    grid = paper_eps("moons")
    result = evaluate(
        model,
        data,
        fgsm_eps=grid,
        attacks={"pgd": PGD(model, eps=grid[1], steps=3, seed=1)},
        meta={"dataset": "moons"},
    )
    path = result.save(tmp_path / "sub" / "evaluation.json")
    loaded = EvaluationResult.load(path)
    assert loaded == result
    assert loaded.fgsm_accuracies() == result.fgsm_accuracies()  # ε survive JSON exactly
    assert EvaluationResult.from_json(result.to_json()) == result
    assert json.loads(path.read_text())["rg_score"] == result.rg_score


def _valid_json() -> dict[str, Any]:
    x = torch.tensor([[0.08], [0.95]])
    result = evaluate(threshold_model(), [(x, torch.tensor([0, 1]))], fgsm_eps=(0.0, 0.3))
    data: dict[str, Any] = json.loads(result.to_json())
    return data


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps(_valid_json())[:-20], "not valid JSON"),
        (json.dumps({**_valid_json(), "rg_score": 199.0}), "not the sum of the sweep"),
        (json.dumps({**_valid_json(), "format": 99}), "format 99"),
        (json.dumps({**_valid_json(), "fgsm": []}), "fgsm"),
        (json.dumps({**_valid_json(), "clean_accuracy": 1.5}), "clean_accuracy"),
        (json.dumps({**_valid_json(), "extra": 1}), "extra"),
        (json.dumps([1, 2]), "not an evaluation result"),
    ],
)
def test_corrupt_file_raises_results_error_naming_it(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "evaluation.json"
    path.write_text(text)
    with pytest.raises(ResultsError, match=match) as info:
        EvaluationResult.load(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_raises_results_error(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="not found"):
        EvaluationResult.load(tmp_path / "nope.json")


# --------------------------------------------------------------------------------------------
# Modes, mutation, validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frozen_bn", [False, True])
def test_model_modes_and_batchnorm_statistics_are_restored(frozen_bn: bool) -> None:
    model = tiny_cnn()
    model.train()
    if frozen_bn:
        model[1].eval()  # a mixed state: frozen BatchNorm in a training model
    modes = [m.training for m in model.modules()]
    stats = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(12, 1, 8, 8, generator=gen)
    y = torch.randint(0, 5, (12,), generator=gen)
    evaluate(
        model,
        _batches(x, y, 5),
        fgsm_eps=(0.0, 0.1),
        attacks={"pgd": PGD(model, eps=0.1, steps=2)},
        only_correct=False,
    )
    robust_accuracy(model, _batches(x, y, 5), FGSM(model, eps=0.1))
    assert [m.training for m in model.modules()] == modes
    for key, value in model.state_dict().items():
        assert torch.equal(value, stats[key]), key


def test_evaluation_runs_in_eval_mode() -> None:
    # Dropout active would make the numbers random; in eval mode they equal an eval model's.
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.9), nn.Linear(16, 3))
    gen = torch.Generator().manual_seed(2)
    data = _batches(torch.rand(40, 4, generator=gen), torch.randint(0, 3, (40,), generator=gen), 8)
    model.train()
    in_train = evaluate(model, data, fgsm_eps=(0.0, 0.2), attacks={"fgsm": FGSM(model, eps=0.2)})
    assert model.training
    model.eval()
    in_eval = evaluate(model, data, fgsm_eps=(0.0, 0.2), attacks={"fgsm": FGSM(model, eps=0.2)})
    assert in_train == in_eval


def test_modes_are_restored_after_an_error() -> None:
    model = tiny_mlp()
    model.train()
    x = torch.rand(4, 4)

    def broken(x: Tensor, y: Tensor) -> Tensor:
        return x[:1]

    with pytest.raises(InputError, match="attack 'broken' returned"):
        evaluate(model, [(x, torch.tensor([0, 1, 2, 0]))], attacks={"broken": broken})
    assert all(m.training for m in model.modules())


def test_inputs_are_not_mutated(moon: tuple[nn.Module, Batches]) -> None:
    model, data = moon
    copies = [(x.clone(), y.clone()) for x, y in data]
    grid = paper_eps("moons")
    evaluate(model, data, fgsm_eps=grid, attacks={"pgd": PGD(model, eps=grid[2], steps=2)})
    robust_accuracy(model, data, FGSM(model, eps=0.1), only_correct=False)
    for (x, y), (x0, y0) in zip(data, copies, strict=True):
        assert torch.equal(x, x0) and torch.equal(y, y0)


def test_streams_over_a_generator_and_a_dataloader() -> None:
    model = tiny_mlp()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(30, 4, generator=gen)
    y = torch.randint(0, 3, (30,), generator=gen)

    def stream() -> Iterator[tuple[Tensor, Tensor]]:
        yield from _batches(x, y, 8)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    from_list = fgsm_sweep(model, _batches(x, y, 8), (0.0, 0.2))
    assert fgsm_sweep(model, stream(), (0.0, 0.2)) == from_list
    assert fgsm_sweep(model, loader, (0.0, 0.2), progress=True) == from_list


def test_dict_outputs_use_the_selector() -> None:
    class DictModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = threshold_model()

        def forward(self, x: Tensor) -> dict[str, Tensor]:
            return {"scores": self.inner(x)}

    x = torch.tensor([[0.08], [0.32], [0.45], [0.62], [0.77], [0.95]])
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    result = fgsm_sweep(DictModel(), [(x, y)], (0.0, 0.1), output="scores")
    assert result == {0.0: 1.0, 0.1: 5 / 6}


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (torch.full((2, 4), 2.0), torch.tensor([0, 1]), r"outside \[0, 1\]"),
        (torch.rand(2, 4), torch.tensor([0.0, 1.0]), "integer class indices"),
        (torch.rand(2, 4), torch.tensor([0, 7]), "labels in"),
        (torch.rand(2, 4), torch.tensor([0, 1, 2]), "one label per sample"),
    ],
)
def test_bad_batches_raise_input_error(x: Tensor, y: Tensor, match: str) -> None:
    model = tiny_mlp()
    with pytest.raises(InputError, match=match):
        fgsm_sweep(model, [(x, y)], (0.0, 0.1))
    with pytest.raises(InputError, match=match):
        robust_accuracy(model, [(x, y)], FGSM(model, eps=0.1))


@pytest.mark.parametrize(
    ("eps", "match"),
    [
        ((), "empty"),
        ((0.1, -0.1), "≥ 0"),
        ((0.1, 0.1), "twice"),
        ((0.0, float("inf")), "finite"),
        ("0.1", "sequence"),
    ],
)
def test_bad_eps_grids(eps: Any, match: str) -> None:
    x, y = torch.rand(2, 4), torch.tensor([0, 1])
    with pytest.raises(InputError, match=match):
        fgsm_sweep(tiny_mlp(), [(x, y)], eps)
    with pytest.raises(InputError, match=match):
        evaluate(tiny_mlp(), [(x, y)], fgsm_eps=eps)


def test_other_argument_errors() -> None:
    model = tiny_mlp()
    x, y = torch.rand(2, 4), torch.tensor([0, 1])
    with pytest.raises(InputError, match="no batch"):
        fgsm_sweep(model, [], (0.0,))
    with pytest.raises(InputError, match="no batch"):
        evaluate(model, [])
    with pytest.raises(ArgumentError, match="max_batches"):
        fgsm_sweep(model, [(x, y)], (0.0,), max_batches=0)
    with pytest.raises(InputError, match="callable"):
        robust_accuracy(model, [(x, y)], "pgd")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="callable"):
        evaluate(model, [(x, y)], attacks={"pgd": 3})  # type: ignore[dict-item]
    with pytest.raises(InputError, match="only_correct"):
        fgsm = FGSM(model, eps=0.1)
        robust_accuracy(model, [(x, y)], fgsm, only_correct=1)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"\(x, y\) pairs"):
        fgsm_sweep(model, [x], (0.0,))  # type: ignore[list-item]


def test_result_validation() -> None:
    sweep = [SweepPoint(eps=0.0, accuracy=0.9), SweepPoint(eps=0.1, accuracy=0.5)]
    result = EvaluationResult(n_samples=10, clean_accuracy=0.9, fgsm=sweep, rg_score=140.0)
    assert result.fgsm_accuracies() == {0.0: 0.9, 0.1: 0.5}
    with pytest.raises(ValidationError, match="not the sum"):
        EvaluationResult(n_samples=10, clean_accuracy=0.9, fgsm=sweep, rg_score=141.0)
    with pytest.raises(ValidationError, match="repeats"):
        EvaluationResult(n_samples=10, clean_accuracy=0.9, fgsm=sweep * 2, rg_score=280.0)
    with pytest.raises(ValidationError):
        SweepPoint(eps=-0.1, accuracy=0.5)
    with pytest.raises(ValidationError):
        result.rg_score = 0.0  # type: ignore[misc]
