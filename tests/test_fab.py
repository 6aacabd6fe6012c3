"""FAB-T (targeted Fast Adaptive Boundary, L∞) and its box-constrained hyperplane projection."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog
from sklearn.datasets import make_blobs
from torch import Tensor, nn

from helpers import accuracy, attack_batch, attack_net, modes, tiny_cnn, tiny_mlp
from lsakit.errors import ArgumentError, ConfigError, InputError
from lsakit.perturb import FABT, PGD, build, from_spec, parse_spec, projection_linf
from lsakit.perturb.apgd_targeted import target_classes
from lsakit.perturb.base import Attack
from lsakit.perturb.fab import FABResult


def small_net(seed: int = 0) -> nn.Sequential:
    """5 classes: room for up to 4 targets."""
    return attack_net(seed, side=4, classes=5)


def batch(seed: int = 0, n: int = 6) -> tuple[Tensor, Tensor]:
    return attack_batch(seed, n, side=4, classes=5)


def fab(model: nn.Module, eps: float, **kwargs: Any) -> FABT:
    """A small budget for the property tests."""
    settings_ = {"steps": 5, "n_target_classes": 3, "seed": 0, **kwargs}
    return FABT(model, eps=eps, **settings_)


def clean_correct_labels(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        labels: Tensor = model.eval()(x).argmax(1)
    return labels


# --------------------------------------------------------------------------------------------
# projection_linf against a linear program
# --------------------------------------------------------------------------------------------


def lp_min_linf_step(t: np.ndarray, w: np.ndarray, b: float) -> float | None:
    """min ‖δ‖∞ s.t. w·(t + δ) = b, 0 ≤ t + δ ≤ 1, by scipy's HiGHS; None when infeasible."""
    d = t.size
    cost = np.r_[np.zeros(d), 1.0]  # variables (δ, s): minimise s with −s ≤ δᵢ ≤ s
    eye = np.eye(d)
    upper = np.block([[eye, -np.ones((d, 1))], [-eye, -np.ones((d, 1))]])
    bounds = [(-ti, 1 - ti) for ti in t] + [(0, None)]
    res = linprog(
        cost,
        A_ub=upper,
        b_ub=np.zeros(2 * d),
        A_eq=np.r_[w, 0.0][None, :],
        b_eq=[b - w @ t],
        bounds=bounds,
        method="highs",
    )
    if res.status == 2:
        return None
    assert res.status == 0, res.message
    return float(res.fun)


def hyperplane_case(seed: int) -> tuple[Tensor, Tensor, Tensor, float]:
    """A random (t, w, b) in d = 2..12, with b a fraction s ∈ [0, 1.3] of the way from w·t to the
    most extreme w·z over the box: s < 1 is reachable (the box binds when s is near 1), s > 1 is
    not; some weights are exactly 0 and some points sit on the box faces."""
    g = torch.Generator().manual_seed(seed)
    d = 2 + seed % 11
    t = torch.rand(1, d, generator=g, dtype=torch.float64)
    if seed % 5 == 0:
        t[0, 0], t[0, -1] = 0.0, 1.0
    w = torch.randn(1, d, generator=g, dtype=torch.float64)
    w[torch.rand(1, d, generator=g) < 0.2] = 0.0
    direction = 1.0 if seed % 2 else -1.0  # towards the box's max or min of w·z
    extreme = direction * float(torch.clamp(w * direction, min=0).sum())
    s = float(torch.rand(1, generator=g)) * 1.3
    now = float((w * t).sum())
    return t, w, torch.tensor([now + s * (extreme - now)], dtype=torch.float64), s


def test_projection_linf_matches_a_linear_program() -> None:
    feasible = infeasible = box_binds = 0
    for seed in range(300):
        t, w, b, _ = hyperplane_case(seed)
        delta = projection_linf(t, w, b)
        optimum = lp_min_linf_step(t[0].numpy(), w[0].numpy(), float(b))
        z = t + delta
        assert z.min() >= 0 and z.max() <= 1
        assert (delta[w == 0] == 0).all()  # coordinates outside the hyperplane's normal stay
        norm = float(delta.abs().max())
        if optimum is not None:
            feasible += 1
            assert norm == pytest.approx(optimum, abs=1e-5)
            assert float((w * z).sum()) == pytest.approx(float(b), abs=1e-9)
            moved = delta[w != 0].abs()
            box_binds += bool((moved < norm - 1e-9).any())  # some coordinate hit its face
        else:
            # Unreachable: the reference's answer, the box point closest to the hyperplane —
            # every coordinate with w ≠ 0 at its face on the side of b.
            infeasible += 1
            side = torch.sign(b - (w * t).sum())
            corner = torch.where(w * side > 0, 1.0, 0.0).to(t.dtype)
            expected = torch.where(w != 0, corner - t, torch.zeros_like(t))
            torch.testing.assert_close(delta, expected, rtol=0, atol=1e-12)
    assert feasible > 150 and infeasible > 30 and box_binds > 30  # every regime was exercised


def test_projection_linf_rows_are_independent_and_float32_agrees() -> None:
    cases = [hyperplane_case(seed) for seed in range(11, 22)]  # d = 2..12: pad to 12 with w = 0
    t = torch.stack([F.pad(c[0][0], (0, 12 - c[0].shape[1]), value=0.5) for c in cases])
    w = torch.stack([F.pad(c[1][0], (0, 12 - c[1].shape[1])) for c in cases])
    b = torch.cat([c[2] for c in cases])
    together = projection_linf(t, w, b)
    for i in range(len(cases)):
        alone = projection_linf(t[i : i + 1], w[i : i + 1], b[i : i + 1])
        torch.testing.assert_close(together[i : i + 1], alone, rtol=0, atol=1e-12)
    single = projection_linf(t.float(), w.float(), b.float())
    assert single.dtype == torch.float32
    torch.testing.assert_close(single.double(), together, rtol=0, atol=1e-5)


def test_projection_linf_by_hand() -> None:
    t = torch.tensor([[0.5, 0.5], [0.5, 0.9], [0.5, 0.5], [0.2, 0.3], [0.5, 0.5]])
    w = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [2.0, 0.0]])
    b = torch.tensor([1.2, 1.8, 3.0, 1.0, 0.6])
    expected = torch.tensor(
        [
            [0.1, 0.1],  # free: both coordinates move by (1.2 − 1)/2
            [0.3, 0.1],  # the second hits 1 after 0.1: λ = 0.3 gives 0.3 + 0.1 = 0.4
            [0.5, 0.5],  # unreachable: to the corner (1, 1), the closest box point
            [0.0, 0.0],  # w = 0: nothing to do
            [-0.2, 0.0],  # w·t > b: move down, only along w
        ]
    )
    torch.testing.assert_close(projection_linf(t, w, b), expected)
    on_plane = projection_linf(t[:1], w[:1], torch.tensor([1.0]))
    assert torch.equal(on_plane, torch.zeros_like(on_plane))


def test_projection_linf_rejects_bad_shapes() -> None:
    with pytest.raises(InputError, match="projection_linf expects"):
        projection_linf(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2))
    with pytest.raises(InputError, match="projection_linf expects"):
        projection_linf(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3))


# --------------------------------------------------------------------------------------------
# Exact values on a linear model
# --------------------------------------------------------------------------------------------


def linear_binary() -> tuple[nn.Linear, Tensor, Tensor, Tensor]:
    """2-D inputs, 2 classes: z₀ − z₁ = (2, 1.5)·x − 1.5, so the L∞ distance from x to the
    boundary is margin/‖w₀ − w₁‖₁ = margin/3.5 (every point here is far enough from the box's
    faces for the unconstrained value to be the answer)."""
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.5]]))
        model.bias.copy_(torch.tensor([-1.5, 0.0]))
    x = torch.tensor([[0.5, 0.5], [0.55, 0.45], [0.6, 0.4], [0.45, 0.55], [0.7, 0.3]])
    y = torch.zeros(len(x), dtype=torch.long)
    margin = x @ torch.tensor([2.0, 1.5]) - 1.5
    return model, x, y, margin / 3.5


def test_minimal_distance_matches_the_analytic_value() -> None:
    model, x, y, distance = linear_binary()
    assert (distance > 0).all() and ((x - distance[:, None]).min() > 0)
    result = FABT(model, eps=1.0, steps=20).search(x, y)
    assert isinstance(result, FABResult) and result.fooled.all()
    # No misclassified point is closer than the boundary; FAB's overshoot η = 1.05 and step-back
    # β = 0.9 settle 0.5 % above it on a linear model.
    assert (result.distance >= distance * (1 - 1e-5)).all()
    assert (result.distance <= distance * 1.01).all()
    reached = (result.adversarial - x).abs().amax(dim=1)
    torch.testing.assert_close(reached, result.distance)
    assert (model(result.adversarial).argmax(1) == 1).all()


def test_first_step_is_the_overshot_projection() -> None:
    """From x, both projections coincide, so x₁ = x + η·δ* whatever α is: one step → 1.05·d*."""
    model, x, y, distance = linear_binary()
    result = FABT(model, eps=1.0, steps=1).search(x, y)
    torch.testing.assert_close(result.distance, 1.05 * distance)
    direction = torch.tensor([-1.0, -1.0])  # sign(w₁ − w₀)
    torch.testing.assert_close(result.adversarial, x + 1.05 * distance[:, None] * direction)


@pytest.mark.parametrize("i", range(5))
def test_eps_just_above_the_distance_fools_just_below_does_not(i: int) -> None:
    model, x, y, distance = linear_binary()
    xi, yi, di = x[i : i + 1], y[i : i + 1], float(distance[i])
    above = FABT(model, eps=1.02 * di, steps=20)(xi, yi)
    assert model(above).argmax(1).item() == 1
    assert (above - xi).abs().max() <= 1.02 * di + 1e-7
    below = FABT(model, eps=0.99 * di, steps=20)(xi, yi)
    assert torch.equal(below, xi)


# --------------------------------------------------------------------------------------------
# Properties every attack must have
# --------------------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(eps=st.floats(0.0, 0.5), steps=st.integers(1, 4), data_seed=st.integers(0, 1000))
def test_result_lies_in_the_threat_model(eps: float, steps: int, data_seed: int) -> None:
    x, y = batch(data_seed)
    x_adv = fab(small_net(), eps, steps=steps, restarts=2)(x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= eps + 1e-6


def test_zero_eps_returns_a_copy_of_x() -> None:
    x, y = batch()
    x_adv = fab(small_net(), 0.0)(x, y)
    assert torch.equal(x_adv, x) and x_adv.data_ptr() != x.data_ptr()


def test_inputs_are_not_mutated() -> None:
    x, y = batch()
    x.requires_grad_(True)
    x_before, y_before = x.detach().clone(), y.clone()
    x_adv = fab(small_net(), 0.3)(x, y)
    assert torch.equal(x.detach(), x_before) and torch.equal(y, y_before)
    assert x.grad is None and not x_adv.requires_grad
    assert not torch.equal(x_adv, x_before)  # the attack did move something


def test_runs_in_eval_mode_and_restores_mixed_modes() -> None:
    model = small_net().train()
    model[4].eval()  # Dropout alone in eval: a mixed state to restore exactly
    before = modes(model)
    seen: list[bool] = []
    model.register_forward_pre_hook(lambda module, _: seen.append(module.training))
    fab(model, 0.1)(*batch())
    assert seen and not any(seen)
    assert modes(model) == before


def test_parameter_grads_are_untouched() -> None:
    model = small_net()
    params = list(model.parameters())
    params[0].grad = torch.full_like(params[0], 3.0)
    fab(model, 0.2)(*batch())
    assert torch.equal(params[0].grad, torch.full_like(params[0], 3.0))
    assert all(p.grad is None for p in params[1:])


def test_dtype_follows_the_input() -> None:
    x, y = batch()
    x_adv = fab(small_net().double(), 0.2)(x.double(), y)
    assert x_adv.dtype == torch.float64


def test_same_seed_same_result() -> None:
    x, y = batch(n=12)
    # ε small enough that random restarts run on the samples the first runs did not fool
    first = fab(small_net(), 0.05, restarts=3, seed=7).search(x, y)
    torch.manual_seed(123)  # a seeded attack ignores the global generator
    again = fab(small_net(), 0.05, restarts=3, seed=7).search(x, y)
    assert torch.equal(again.adversarial, first.adversarial)
    assert torch.equal(again.distance, first.distance)


def test_clean_mistakes_are_returned_unchanged() -> None:
    model = small_net()
    x, y = batch(n=12)
    wrong = model.eval()(x).argmax(1) != y
    assert wrong.any() and (~wrong).any()
    result = fab(model, 0.3).search(x, y)
    assert torch.equal(result.adversarial[wrong], x[wrong])
    assert result.fooled[wrong].all() and (result.distance[wrong] == 0).all()


def test_search_reports_consistent_results() -> None:
    model = small_net()
    x, y = batch(1, n=16)
    y = clean_correct_labels(model, x)
    eps = 0.15
    result = fab(model, eps, steps=10).search(x, y)
    assert result.fooled.any() and (~result.fooled).any()
    reached = (result.adversarial - x).flatten(1).abs().amax(dim=1)
    predicted = model(result.adversarial).argmax(1)
    assert (predicted != y)[result.fooled].all() and (reached[result.fooled] <= eps).all()
    assert torch.equal(result.adversarial[~result.fooled], x[~result.fooled])
    assert (result.distance[result.fooled] <= reached[result.fooled] + 1e-6).all()
    assert (result.distance[~result.fooled] > eps).all()  # found beyond ε, or inf
    assert torch.equal(fab(model, eps, steps=10)(x, y), result.adversarial)


@pytest.mark.parametrize(
    ("make_model", "shape", "classes"),
    [(tiny_mlp, (10, 4), 3), (tiny_cnn, (10, 1, 8, 8), 5)],
)
def test_flat_inputs_and_images(
    make_model: Callable[[], nn.Module], shape: tuple[int, ...], classes: int
) -> None:
    model = make_model()
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    y = clean_correct_labels(model, x)
    x_adv = FABT(model, eps=0.5, steps=10, seed=0)(x, y)  # n_target_classes capped at C − 1
    assert x_adv.shape == x.shape and (x_adv - x).abs().max() <= 0.5 + 1e-6
    assert accuracy(model, x_adv, y) < 1.0


_NOT_AN_INT: Any = 1.5  # typed Any: the tests pass wrong types on purpose


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda m: FABT(m, eps=-0.1), "eps"),
        (lambda m: FABT(m, eps=0.1, alpha_max=1.5), "alpha_max"),
        (lambda m: FABT(m, eps=0.1, eta=0.9), "eta"),
        (lambda m: FABT(m, eps=0.1, eta=float("nan")), "eta"),
        (lambda m: FABT(m, eps=0.1, beta=0.0), "beta"),
        (lambda m: FABT(m, eps=0.1, beta=1.5), "beta"),
        (lambda m: FABT(m, eps=0.1, seed=_NOT_AN_INT), "seed"),
        (lambda m: FABT(object(), eps=0.1), "torch.nn.Module"),  # type: ignore[arg-type]
    ],
)
def test_bad_settings_raise_input_error(make: Callable[[nn.Module], Attack], match: str) -> None:
    with pytest.raises(InputError, match=match):
        make(small_net())


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda m: FABT(m, eps=0.1, steps=0), "steps"),
        (lambda m: FABT(m, eps=0.1, n_target_classes=0), "n_target_classes"),
        (lambda m: FABT(m, eps=0.1, restarts=_NOT_AN_INT), "restarts"),
    ],
)
def test_bad_counts_raise_argument_error(make: Callable[[nn.Module], Attack], match: str) -> None:
    with pytest.raises(ArgumentError, match=match):
        make(small_net())


def test_bad_calls_raise_clear_errors() -> None:
    x, y = batch()
    attack = fab(small_net(), 0.1)
    with pytest.raises(InputError, match="labels"):
        attack(x)
    with pytest.raises(InputError, match="labels in"):
        attack(x, y + 5)  # 5 classes: labels 5..9 do not exist
    with pytest.raises(InputError, match=r"outside \[0, 1\]"):
        attack(x + 1, y)
    with pytest.raises(InputError, match="one label per sample"):
        attack.search(x, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ConfigError, match="at least 2 classes"):
        FABT(nn.Linear(4, 1), eps=0.1)(torch.rand(3, 4), torch.zeros(3, dtype=torch.long))


def test_params_are_json_and_rebuild_the_attack() -> None:
    model = small_net()
    assert FABT(model, eps=0.1, seed=3).params() == {
        "eps": 0.1,
        "steps": 100,
        "n_target_classes": 9,
        "restarts": 1,
        "alpha_max": 0.1,
        "eta": 1.05,
        "beta": 0.9,
        "seed": 3,
    }
    attack = FABT(model, eps=0.2, steps=7, restarts=2, eta=1.1, beta=0.5, output=0)
    params = json.loads(json.dumps(attack.params()))
    assert FABT(model, **params).params() == params
    assert FABT.name == "fab_t" and FABT.is_adversarial
    assert "FABT(eps=0.2" in repr(attack)


def test_registry_builds_fab_t() -> None:
    model = small_net()
    assert parse_spec("fab_t=0.3,steps=20") == ("fab_t", 0.3, {"steps": 20})
    attack = from_spec("fab_t=0.3,steps=20", model)
    assert isinstance(attack, FABT) and attack.eps == 0.3 and attack.steps == 20
    built = build("fab_t", model=model, strength=8 / 255, n_target_classes=3, seed=1)
    assert isinstance(built, FABT) and built.params()["n_target_classes"] == 3
    with pytest.raises(ConfigError, match="accepted: eps, steps, n_target_classes"):
        build("fab_t", model=model, strength=0.1, loss="ce")
    with pytest.raises(ConfigError, match="eta"):
        build("fab_t", model=model, strength=0.1, eta=0.5)


# --------------------------------------------------------------------------------------------
# The AutoAttack schedule: targets, restarts, who is attacked
# --------------------------------------------------------------------------------------------


RunLog = list[tuple[Tensor, Tensor, bool]]


@pytest.fixture
def recorded_runs(monkeypatch: pytest.MonkeyPatch) -> RunLog:
    """Every ``_single_run`` call as (x_run, target, random_start)."""
    runs: RunLog = []
    single_run = FABT._single_run

    def recording(self: FABT, x: Tensor, y: Tensor, target: Tensor, *, random_start: bool) -> Any:
        runs.append((x, target, random_start))
        return single_run(self, x, y, target, random_start=random_start)

    monkeypatch.setattr(FABT, "_single_run", recording)
    return runs


def test_targets_in_rank_order_capped_at_c_minus_1(recorded_runs: RunLog) -> None:
    model = small_net()
    x, _ = batch()
    y = clean_correct_labels(model, x)
    # ε so small nobody is fooled: every (target, restart) pair runs on the whole batch.
    fab(model, 1e-6, steps=2, n_target_classes=9, restarts=2)(x, y)
    expected = target_classes(model(x), y, 4)  # 5 classes: 4 possible targets, not 9
    assert len(recorded_runs) == 8
    for k, (x_run, target, random_start) in enumerate(recorded_runs):
        assert torch.equal(target, expected[:, k // 2]) and len(x_run) == len(x)
        assert random_start == (k % 2 == 1)  # the first run of each target starts at x


def test_attacks_only_samples_not_yet_fooled(recorded_runs: RunLog) -> None:
    model = small_net()
    x, y = batch(2, n=24)
    result = fab(model, 0.12, steps=8, n_target_classes=4).search(x, y)
    clean_wrong = model.eval()(x).argmax(1) != y
    sizes = [len(x_run) for x_run, _, _ in recorded_runs]
    assert sizes[0] == int((~clean_wrong).sum())
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0]
    assert len(x) - sizes[-1] <= int(result.fooled.sum())  # shrinks only by the fooled


def run_starts(seed: int, monkeypatch: pytest.MonkeyPatch) -> list[Tensor]:
    """The first iterate of every run of a 1-step, 1-target, 2-restart FAB-T at ε = 0.02."""
    starts: list[Tensor] = []
    attack = FABT(small_net(), eps=0.02, steps=1, n_target_classes=1, restarts=2, seed=seed)
    gradient = attack._loss_gradient

    def recording(x_adv: Tensor, y: Tensor, loss_fn: Any) -> tuple[Tensor, Tensor, Tensor]:
        starts.append(x_adv)
        return gradient(x_adv, y, loss_fn)

    monkeypatch.setattr(attack, "_loss_gradient", recording)
    x = torch.full((4, 2, 4, 4), 0.5)
    attack(x, clean_correct_labels(small_net(), x))
    return starts


def test_random_start_is_half_eps_away_and_seeded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference's restart point: x + ε/2 · u/‖u‖∞, u ~ U[−1, 1]ᵈ; the first run's is x."""
    starts = run_starts(0, monkeypatch)
    x = torch.full((4, 2, 4, 4), 0.5)
    assert len(starts) == 2 and torch.equal(starts[0], x)
    reach = (starts[1] - x).flatten(1).abs().amax(dim=1)
    torch.testing.assert_close(reach, torch.full((4,), 0.01))
    assert torch.equal(run_starts(0, monkeypatch)[1], starts[1])
    assert not torch.equal(run_starts(1, monkeypatch)[1], starts[1])


# --------------------------------------------------------------------------------------------
# Strength on a small trained model
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blobs() -> tuple[nn.Module, Tensor, Tensor]:
    """A 2-64-64-4 MLP trained on four slightly overlapping Gaussian blobs scaled to [0, 1]."""
    features, labels = make_blobs(n_samples=300, centers=4, cluster_std=1.0, random_state=0)
    x = torch.tensor(features, dtype=torch.float32)
    x = (x - x.min(0).values) / (x.max(0).values - x.min(0).values)
    y = torch.tensor(labels)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(300):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model.eval(), x, y


@pytest.mark.parametrize("eps", [0.03, 0.06])
def test_fab_t_is_as_strong_as_pgd(blobs: tuple[nn.Module, Tensor, Tensor], eps: float) -> None:
    model, x, y = blobs
    clean = accuracy(model, x, y)
    pgd = accuracy(model, PGD(model, eps=eps, steps=20, seed=0)(x, y), y)
    fab_t = accuracy(model, FABT(model, eps=eps, steps=20, n_target_classes=3)(x, y), y)
    assert clean > 0.9
    assert fab_t < clean and fab_t <= pgd + 0.02
