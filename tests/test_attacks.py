"""Attacks (FGSM, PGD L∞/L2, APGD CE/DLR) and the perturbation registry."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from helpers import accuracy, attack_batch, attack_net, modes, trained_moons
from lsakit.errors import ArgumentError, ConfigError, InputError
from lsakit.perturb import (
    APGD,
    FGSM,
    PGD,
    PGDL2,
    Attack,
    GaussianNoise,
    build,
    dlr_loss,
    from_spec,
    is_adversarial,
    names,
    parse_spec,
    project_l2,
    project_linf,
)
from lsakit.perturb.apgd import checkpoint_intervals, halve_step
from lsakit.perturb.pgd import Norm

AttackFactory = Callable[..., Attack]

#: name → factory(model, eps, **budget); every attack the properties must hold for.
ATTACKS: dict[str, AttackFactory] = {
    "fgsm": lambda model, eps, **_: FGSM(model, eps=eps),
    "pgd_linf": lambda model, eps, steps=3, restarts=1, alpha=None, seed=0: PGD(
        model, eps=eps, steps=steps, restarts=restarts, alpha=alpha, seed=seed
    ),
    "pgd_l2": lambda model, eps, steps=3, restarts=1, alpha=None, seed=0: PGDL2(
        model, eps=eps, steps=steps, restarts=restarts, alpha=alpha, seed=seed
    ),
    "apgd_ce": lambda model, eps, steps=3, restarts=1, seed=0, **_: APGD(
        model, eps=eps, steps=steps, restarts=restarts, loss="ce", seed=seed
    ),
    "apgd_dlr": lambda model, eps, steps=3, restarts=1, seed=0, **_: APGD(
        model, eps=eps, steps=steps, restarts=restarts, loss="dlr", seed=seed
    ),
}
L2_ATTACKS = {"pgd_l2"}


def small_net(seed: int = 0) -> nn.Sequential:
    return attack_net(seed)


def batch(seed: int = 0, n: int = 6) -> tuple[Tensor, Tensor]:
    return attack_batch(seed, n)


# --------------------------------------------------------------------------------------------
# Properties shared by every attack
# --------------------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    name=st.sampled_from(sorted(ATTACKS)),
    eps=st.floats(0.0, 0.5),
    alpha=st.none() | st.floats(0.0, 0.3),
    steps=st.integers(1, 4),
    restarts=st.integers(1, 3),
    data_seed=st.integers(0, 1000),
)
def test_result_lies_in_the_threat_model(
    name: str, eps: float, alpha: float | None, steps: int, restarts: int, data_seed: int
) -> None:
    model = small_net()
    x, y = batch(data_seed)
    attack = ATTACKS[name](model, eps, steps=steps, restarts=restarts, alpha=alpha)
    x_adv = attack(x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    if name in L2_ATTACKS:
        assert (delta.norm(dim=1) <= eps + 1e-5).all()
    else:
        assert delta.abs().max() <= eps + 1e-6


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_zero_eps_returns_x_exactly(name: str) -> None:
    x, y = batch()
    x_adv = ATTACKS[name](small_net(), 0.0)(x, y)
    assert torch.equal(x_adv, x)
    assert x_adv.data_ptr() != x.data_ptr()  # a copy, not the caller's tensor


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_inputs_are_not_mutated_and_stay_gradient_free(name: str) -> None:
    x, y = batch()
    x.requires_grad_(True)
    x_before, y_before = x.detach().clone(), y.clone()
    x_adv = ATTACKS[name](small_net(), 0.2)(x, y)
    assert torch.equal(x.detach(), x_before) and torch.equal(y, y_before)
    assert x.requires_grad and x.grad is None and not x_adv.requires_grad
    assert not torch.equal(x_adv, x_before)  # the attack did move something


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_model_mode_restored_including_mixed_modes(name: str) -> None:
    model = small_net()
    x, y = batch()
    model.train()
    ATTACKS[name](model, 0.1)(x, y)
    assert all(modes(model))
    model[2].eval()  # BatchNorm frozen, the rest training
    expected = modes(model)
    ATTACKS[name](model, 0.1)(x, y)
    assert modes(model) == expected


class _Recorder(nn.Module):
    """Records the training flag at every forward and raises at forward number ``fail_at``."""

    def __init__(self, inner: nn.Module, fail_at: int | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.fail_at = fail_at
        self.seen_training: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen_training.append(self.training)
        if self.fail_at is not None and len(self.seen_training) == self.fail_at:
            raise RuntimeError("boom inside the attack")
        out: Tensor = self.inner(x)
        return out


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_model_runs_in_eval_mode_and_mode_is_restored_after_an_error(name: str) -> None:
    x, y = batch()
    recorder = _Recorder(small_net()).train()
    ATTACKS[name](recorder, 0.1)(x, y)
    assert recorder.seen_training and not any(recorder.seen_training)

    net = small_net()
    failing = _Recorder(net, fail_at=1).train()  # the attack's first forward (it also validates)
    net[2].eval()
    expected = modes(failing)
    with pytest.raises(RuntimeError, match="boom"):
        ATTACKS[name](failing, 0.1)(x, y)
    assert modes(failing) == expected


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_parameter_grads_are_untouched(name: str) -> None:
    model = small_net()
    x, y = batch()
    first, *rest = model.parameters()
    first.grad = torch.full_like(first, 0.25)
    ATTACKS[name](model, 0.2)(x, y)
    assert torch.equal(first.grad, torch.full_like(first, 0.25))
    assert all(p.grad is None for p in rest)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_dtype_follows_the_input(name: str) -> None:
    model = small_net().double()
    x, y = batch()
    x_adv = ATTACKS[name](model, 0.1)(x.double(), y)
    assert x_adv.dtype == torch.float64 and x_adv.shape == x.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_device_follows_the_model(name: str) -> None:
    model = small_net().cuda()
    x, y = batch()  # on the CPU
    x_adv = ATTACKS[name](model, 0.1)(x, y)
    assert x_adv.device.type == "cuda"
    assert (x_adv.cpu() - x).abs().max() <= 0.1 + 1e-6


def test_tuple_and_dict_outputs_give_the_same_attack() -> None:
    net = small_net()
    x, y = batch()

    class TupleOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net  # a submodule, so the attack's eval mode reaches its BN and Dropout

        def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
            return self.net(x), x

    class DictOut(TupleOut):
        def forward(self, x: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
            return {"features": x, "scores": self.net(x)}

    expected = PGD(net, eps=0.2, steps=3, seed=1)(x, y)
    assert torch.equal(PGD(TupleOut(), eps=0.2, steps=3, seed=1)(x, y), expected)
    assert torch.equal(PGD(DictOut(), eps=0.2, steps=3, seed=1, output="scores")(x, y), expected)


# --------------------------------------------------------------------------------------------
# Exact values
# --------------------------------------------------------------------------------------------


def linear_model() -> nn.Linear:
    """z = W x with W = [[1, −2], [0.5, 1]]: ∇ₓCE = Wᵀ(softmax(z) − onehot(y))."""
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 1.0]]))
    return model


def test_fgsm_matches_the_hand_computed_gradient_sign() -> None:
    model = linear_model()
    x = torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.05, 0.98]])
    y = torch.tensor([0, 1, 0])
    # softmax − onehot = p₁·(−1, 1) for y = 0 and p₀·(1, −1) for y = 1, so the gradient is
    # p₁·(W₁ − W₀) = p₁·(−0.5, 3) or p₀·(0.5, −3): signs (−, +) and (+, −).
    w = model.weight.detach()
    manual_grad = (torch.softmax(x @ w.T, dim=1) - F.one_hot(y, 2).float()) @ w
    assert torch.equal(manual_grad.sign(), torch.tensor([[-1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]]))
    attack = FGSM(model, eps=0.1)
    assert torch.equal(attack.direction(x, y), manual_grad.sign())
    expected = torch.tensor([[0.4, 0.6], [0.6, 0.4], [0.0, 1.0]])  # last row clamped to [0, 1]
    torch.testing.assert_close(attack(x, y), expected, rtol=0, atol=1e-7)


def test_fgsm_step_reuses_one_direction_for_an_eps_sweep() -> None:
    model = small_net()
    x, y = batch()
    direction = FGSM(model, eps=0.3).direction(x, y)
    for eps in (0.0, 0.05, 0.3):
        assert torch.equal(FGSM.step(x, direction, eps), FGSM(model, eps=eps)(x, y))


def test_pgd_one_step_without_random_start_is_fgsm() -> None:
    model = small_net()
    x, y = batch()
    pgd = PGD(model, eps=0.1, alpha=0.1, steps=1, random_start=False)
    assert torch.equal(pgd(x, y), FGSM(model, eps=0.1)(x, y))


def test_pgd_default_step_is_madrys_rule() -> None:
    assert PGD(small_net(), eps=0.3, steps=40).alpha == pytest.approx(2.5 * 0.3 / 40)
    assert PGD(small_net(), eps=0.3, steps=40, alpha=0.01).alpha == 0.01


def test_projections_by_hand() -> None:
    x = torch.tensor([[0.0, 0.0], [0.5, 0.5], [0.5, 0.5]])
    points = torch.tensor([[3.0, 4.0], [0.5, 0.5], [0.8, 0.9]])  # ‖δ‖₂ = 5, 0 and 0.5
    torch.testing.assert_close(
        project_l2(points, x, 1.0), torch.tensor([[0.6, 0.8], [0.5, 0.5], [0.8, 0.9]])
    )
    torch.testing.assert_close(
        project_linf(torch.tensor([[0.3, -0.3], [0.9, 0.2], [0.55, 0.5]]), x, 0.1),
        torch.tensor([[0.1, 0.0], [0.6, 0.4], [0.55, 0.5]]),
    )


def test_dlr_loss_by_hand() -> None:
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0], [3.0, 1.0, 2.0, 0.0]])
    # sorted 3 ≥ 2 ≥ 1: y = 0 is on top → −(3 − 2)/(3 − 1); y = 2 → −(2 − 3)/(3 − 1).
    torch.testing.assert_close(dlr_loss(logits, torch.tensor([0, 2])), torch.tensor([-0.5, 0.5]))
    # invariant to shifting and scaling the logits
    torch.testing.assert_close(
        dlr_loss(7 * logits - 3, torch.tensor([0, 2])), torch.tensor([-0.5, 0.5])
    )


def test_apgd_checkpoint_schedule_matches_the_reference() -> None:
    # p₁ = 0.22, decrement 0.03, minimum 0.06 of the budget, each at least one iteration.
    assert checkpoint_intervals(100) == (22, 3, 6)
    assert checkpoint_intervals(10) == (2, 1, 1)
    assert checkpoint_intervals(1) == (1, 1, 1)


def test_apgd_halving_conditions_by_hand() -> None:
    # Three samples over k = 4 steps: 2, 3 and 3 increases; ρ·k = 2.
    losses = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 2.0, 2.0], [1.0, 1.0, 1.0]])
    losses = torch.cat([losses, torch.tensor([[0.5, 3.0, 3.0]])])
    halved_last = torch.tensor([True, True, False])
    best_last, best_now = torch.tensor([1.0, 2.0, 5.0]), torch.tensor([1.0, 3.0, 5.0])
    halve = halve_step(losses, 0.5, halved_last, best_last, best_now)
    # 0: 2 ≤ 2 increases → (1), "≤" as in the reference; 1: improving → keep; 2: 3 > 2 increases
    # but not halved last time and best loss unchanged → (2).
    assert halve.tolist() == [True, False, True]


class _ScriptedLoss(nn.Module):
    """Logits (0, vₖ) at the k-th forward, so CE with y = 0 is log(1 + e^{vₖ}), increasing in vₖ.

    The input enters with weight 0: the gradient is zero, the iterates stay put, and the loss
    sequence an APGD run sees is exactly the script, which isolates the step-size rule.
    """

    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.values = values
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        zero = 0 * x.flatten(1).sum(1)
        return torch.stack([zero, zero + value], dim=1)


@pytest.mark.parametrize(
    ("script", "halvings"),
    [
        # Constant loss: no step improves, condition (1) halves at all 8 checkpoints of 100 steps
        # (after 22, 41, 57, 70, 80, 87, 93 and 99 steps).
        ([0.0] * 101, 8),
        # Loss rising at every step: neither condition holds, the step stays 2ε.
        ([float(k) for k in range(101)], 0),
        # Rising at every step but below the start's loss: condition (2) alone, at every second
        # checkpoint (the one after a halving is exempt): checkpoints 2, 4, 6, 8.
        ([50.0] + [k / 10 for k in range(100)], 4),
    ],
)
def test_apgd_step_size_rule(script: list[float], halvings: int) -> None:
    attack = APGD(_ScriptedLoss(script), eps=0.1, steps=100, seed=0)
    run = attack._single_run(torch.full((1, 3), 0.5), torch.tensor([0]))  # one sample, no context
    torch.testing.assert_close(run.step, torch.tensor([2 * 0.1 / 2**halvings]))


def test_apgd_dlr_needs_three_classes() -> None:
    model = nn.Linear(2, 2)
    x, y = torch.rand(3, 2), torch.tensor([0, 1, 0])
    with pytest.raises(ConfigError, match='loss="ce"'):
        APGD(model, eps=0.1, loss="dlr")(x, y)
    with pytest.raises(ConfigError, match="at least 3 classes"):
        from_spec("apgd_dlr=0.1", model)(x, y)
    assert APGD(model, eps=0.1, loss="ce", steps=2)(x, y).shape == x.shape


def test_apgd_leaves_clean_mistakes_unchanged() -> None:
    model = small_net().eval()
    x, y = batch(n=8)
    with torch.no_grad():
        wrong = model(x).argmax(1) != y
    assert wrong.any() and (~wrong).any()
    x_adv = APGD(model, eps=0.3, steps=5, seed=0)(x, y)
    assert torch.equal(x_adv[wrong], x[wrong])
    assert not torch.equal(x_adv[~wrong], x[~wrong])


# --------------------------------------------------------------------------------------------
# A trained model: stronger attacks do at least as well
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moons() -> tuple[nn.Module, Tensor, Tensor]:
    """A 2-64-64-2 MLP trained with Adam on make_moons scaled to [0, 1] (100 % clean)."""
    return trained_moons()


def test_stronger_attacks_lower_accuracy_on_a_trained_model(
    moons: tuple[nn.Module, Tensor, Tensor],
) -> None:
    model, x, y = moons
    clean = accuracy(model, x, y)
    fgsm = accuracy(model, FGSM(model, eps=0.1)(x, y), y)
    pgd = accuracy(model, PGD(model, eps=0.1, steps=20, seed=0)(x, y), y)
    apgd = accuracy(model, APGD(model, eps=0.1, steps=20, seed=0)(x, y), y)
    assert clean > 0.95
    assert pgd <= fgsm < clean
    assert apgd <= fgsm


def per_sample_ce(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        logits = model(x)
    return logits.argmax(1) != y, F.cross_entropy(logits, y, reduction="none")


def test_pgd_restarts_take_the_per_sample_worst_case() -> None:
    # Four classes, so "misclassified" and "highest cross-entropy" can disagree.
    model = small_net().eval()
    x, y = batch(seed=1, n=256)
    # A seeded attack re-uses its generator, so three single-restart calls draw exactly the
    # random starts of the three restarts of one restarts=3 call.
    single = PGD(model, eps=0.2, steps=2, seed=7)
    runs = torch.stack([single(x, y) for _ in range(3)])  # (restart, N, …)
    combined = PGD(model, eps=0.2, steps=2, restarts=3, seed=7)(x, y)

    fooled, loss = zip(*(per_sample_ce(model, run, y) for run in runs), strict=True)
    fooled_by, loss_by = torch.stack(fooled), torch.stack(loss)  # (restart, N)
    # Worst case: among the restarts that misclassify (all of them if none does), the highest
    # loss; argmax returns the first maximum, i.e. the earliest restart on ties.
    eligible = fooled_by | ~fooled_by.any(dim=0)
    pick = torch.where(eligible, loss_by, -torch.inf).argmax(dim=0)
    expected = runs[pick, torch.arange(len(y))]
    assert torch.equal(combined, expected)
    assert (pick > 0).any() and (pick == 0).any()  # every restart contributes


def test_pgd_restart_rule_prefers_misclassified_over_higher_loss(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # logits = 10·x, y = 0. CE values: FOOL_LOW 0.98 (misclassified), FOOL_HIGH / FOOL_HIGH_2
    # 3.05 (misclassified, equal), CORRECT_HIGH 1.03 and CORRECT_LOW 0.01 (both correct).
    fool_low, correct_high, correct_low = [0.5, 0.55, 0.0], [0.5, 0.49, 0.49], [0.5, 0.0, 0.0]
    fool_high, fool_high_2 = [0.5, 0.8, 0.0], [0.5, 0.0, 0.8]
    restarts = torch.tensor(
        [  # one row per restart, one column per sample
            [fool_low, correct_low, correct_low, fool_high],
            [correct_high, fool_low, correct_high, fool_high_2],
            [correct_high, fool_high, correct_low, fool_high_2],
        ]
    )
    expected_pick = [0, 2, 1, 0]  # misclassified first; then highest loss; ties: earliest
    model = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(10 * torch.eye(3))
    calls = iter(restarts)
    monkeypatch.setattr(PGD, "_single_run", lambda self, x, y: next(calls))
    x, y = torch.full((4, 3), 0.5), torch.zeros(4, dtype=torch.long)
    result = PGD(model, eps=1.0, restarts=3)(x, y)
    assert torch.equal(result, restarts[expected_pick, torch.arange(4)])


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_random_start_is_uniform_in_the_ball(norm: Norm) -> None:
    eps, n, d = 0.2, 4000, 2
    x = torch.full((n, d), 0.5)  # the [0, 1] clamp is out of reach
    # α = 0 and one step: the result is the random start itself (projected, a no-op inside).
    start = PGD(nn.Linear(d, 2), eps=eps, alpha=0.0, steps=1, norm=norm, seed=0)(
        x, torch.zeros(n, dtype=torch.long)
    )
    delta = start - x
    tol = 5 / n**0.5
    if norm == "linf":  # U[−ε, ε] per element: mean 0, variance ε²/3
        assert abs(delta.mean().item()) <= eps * tol
        assert (delta.pow(2).mean() / eps**2).item() == pytest.approx(1 / 3, abs=tol)
    else:  # uniform in the disc: (r/ε)^d ~ U[0, 1], direction isotropic
        r = delta.norm(dim=1)
        assert (r <= eps * (1 + 1e-6)).all()
        assert ((r / eps) ** d).mean().item() == pytest.approx(0.5, abs=tol)
        assert delta.mean(dim=0).abs().max().item() <= eps * tol


def test_pgd_l2_survives_a_zero_gradient() -> None:
    x, y = torch.full((2, 3), 0.5), torch.tensor([0, 0])
    x_adv = PGDL2(_ScriptedLoss([-1.0]), eps=0.3, steps=3, random_start=False)(x, y)
    assert torch.equal(x_adv, x)  # no step, and no NaN from 0/‖0‖


def test_apgd_returns_the_misclassified_point_else_the_best_loss_point(
    moons: tuple[nn.Module, Tensor, Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x, y = moons
    runs: list[Any] = []
    single_run = APGD._single_run

    def recording(self: APGD, x_run: Tensor, y_run: Tensor) -> Any:
        runs.append(single_run(self, x_run, y_run))
        return runs[-1]

    monkeypatch.setattr(APGD, "_single_run", recording)
    x_adv = APGD(model, eps=0.1, steps=10, seed=0)(x, y)
    (run,) = runs
    robust = ~per_sample_ce(model, x, y)[0]  # the run attacks the clean-correct samples
    fooled = run.fooled
    assert fooled.any() and (~fooled).any()
    assert per_sample_ce(model, run.adversarial[fooled], y[robust][fooled])[0].all()
    assert torch.equal(x_adv[robust][fooled], run.adversarial[fooled])
    assert torch.equal(x_adv[robust][~fooled], run.best[~fooled])
    assert not torch.equal(run.adversarial[fooled], run.best[fooled])  # the choice matters


@pytest.mark.parametrize("attack_cls", [PGD, APGD])
def test_more_restarts_never_hurt_any_sample(
    moons: tuple[nn.Module, Tensor, Tensor], attack_cls: type[PGD] | type[APGD]
) -> None:
    model, x, y = moons
    one = attack_cls(model, eps=0.15, steps=4, restarts=1, seed=3)(x, y)
    three = attack_cls(model, eps=0.15, steps=4, restarts=3, seed=3)(x, y)
    fooled_1, loss_1 = per_sample_ce(model, one, y)
    fooled_3, loss_3 = per_sample_ce(model, three, y)
    assert (fooled_3 >= fooled_1).all()
    robust = ~fooled_3
    assert (loss_3[robust] >= loss_1[robust] - 1e-6).all()
    assert fooled_3.sum() >= fooled_1.sum()


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

BAD_INPUTS: dict[str, tuple[Tensor, Tensor]] = {
    "above one": (torch.full((2, 2, 3, 3), 1.5), torch.tensor([0, 1])),
    "negative": (torch.full((2, 2, 3, 3), -0.1), torch.tensor([0, 1])),
    "nan": (torch.full((2, 2, 3, 3), float("nan")), torch.tensor([0, 1])),
    "integer dtype": (torch.ones(2, 2, 3, 3, dtype=torch.uint8), torch.tensor([0, 1])),
    "empty": (torch.zeros(0, 2, 3, 3), torch.zeros(0, dtype=torch.long)),
    "y wrong shape": (torch.rand(2, 2, 3, 3), torch.tensor([[0, 1]])),
    "y float": (torch.rand(2, 2, 3, 3), torch.tensor([0.0, 1.0])),
    "label out of range": (torch.rand(2, 2, 3, 3), torch.tensor([0, 4])),
    "negative label": (torch.rand(2, 2, 3, 3), torch.tensor([-1, 0])),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_raise_input_error(name: str, case: str) -> None:
    x, y = BAD_INPUTS[case]
    with pytest.raises(InputError):
        ATTACKS[name](small_net(), 0.1)(x, y)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_missing_labels_and_negative_eps_raise_input_error(name: str) -> None:
    x, _ = batch()
    with pytest.raises(InputError, match="labels"):
        ATTACKS[name](small_net(), 0.1)(x)
    with pytest.raises(InputError, match="eps"):
        ATTACKS[name](small_net(), -0.1)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda m: PGD(m, eps=0.1, alpha=-1.0), "alpha"),
        (lambda m: PGD(m, eps=0.1, random_start="yes"), "random_start"),  # type: ignore[arg-type]
        (lambda m: PGD(m, eps=0.1, seed=1.5), "seed"),  # type: ignore[arg-type]
        (lambda m: APGD(m, eps=0.1, rho=1.5), "rho"),
        (lambda m: FGSM("not a model", eps=0.1), "nn.Module"),  # type: ignore[arg-type]
    ],
)
def test_bad_settings_raise_input_error(make: Callable[[nn.Module], Attack], match: str) -> None:
    with pytest.raises(InputError, match=match):
        make(small_net())


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda m: PGD(m, eps=0.1, steps=0), "steps must be an integer ≥ 1, got 0"),
        (lambda m: PGD(m, eps=0.1, restarts=0), "restarts must be an integer ≥ 1"),
    ],
)
def test_bad_counts_raise_argument_error(make: Callable[[nn.Module], Attack], match: str) -> None:
    with pytest.raises(ArgumentError, match=match) as info:
        make(small_net())
    assert isinstance(info.value, ConfigError) and info.value.names


def test_bad_choices_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="linf"):
        PGD(small_net(), eps=0.1, norm="l1")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dlr"):
        APGD(small_net(), eps=0.1, loss="hinge")  # type: ignore[arg-type]


@pytest.mark.parametrize("with_parameters", [False, True])
def test_a_model_that_detaches_its_input_is_reported(with_parameters: bool) -> None:
    class Detached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 3) if with_parameters else nn.Identity()

        def forward(self, x: Tensor) -> Tensor:
            out: Tensor = self.head(x.detach())
            return out[:, :3]

    x = torch.rand(2, 4)
    with pytest.raises(InputError, match="differentiabl"):
        FGSM(Detached(), eps=0.1)(x, torch.tensor([0, 1]))


def test_inference_mode_is_reported_and_no_grad_is_fine() -> None:
    x, y = batch()
    attack = PGD(small_net(), eps=0.1, steps=2)
    with torch.no_grad():
        assert attack(x, y).shape == x.shape
    with torch.inference_mode(), pytest.raises(InputError, match="inference_mode"):
        attack(x, y)


def test_square_needs_no_gradients_and_runs_under_inference_mode() -> None:
    from lsakit.perturb import Square

    x, y = batch()
    model = small_net()
    expected = Square(model, eps=0.1, queries=20, seed=0)(x, y)
    with torch.inference_mode():
        got = Square(model, eps=0.1, queries=20, seed=0)(x, y)
    assert torch.equal(got, expected)


def test_params_are_json_and_complete() -> None:
    pgd = PGD(small_net(), eps=0.3, steps=40, seed=1)
    assert json.loads(json.dumps(pgd.params())) == {
        "eps": 0.3,
        "alpha": pytest.approx(0.01875),
        "steps": 40,
        "random_start": True,
        "restarts": 1,
        "norm": "linf",
        "seed": 1,
    }
    assert APGD(small_net(), eps=0.1, output=lambda o: o).params()["output"] == "<callable>"
    assert "PGDL2(" in repr(PGDL2(small_net(), eps=1.0)) and "'l2'" in repr(
        PGDL2(small_net(), eps=1.0)
    )


# --------------------------------------------------------------------------------------------
# Registry and the CLI spec syntax
# --------------------------------------------------------------------------------------------


def test_names_and_kinds() -> None:
    expected = ["gaussian", "salt", "pepper", "salt_pepper", "speckle", "fgsm", "pgd", "pgd_l2"]
    assert names()[: len(expected)] == expected and "apgd" in names()
    assert [n for n in names() if is_adversarial(n)] == [
        "fgsm",
        "pgd",
        "pgd_l2",
        "apgd",
        "apgd_dlr",
        "apgd_t",
        "fab_t",
        "square",
        "cw",
        "mifgsm",
        "eot_pgd",
        "eot_apgd",
    ]


def test_build_maps_strength_to_the_main_parameter() -> None:
    model = small_net()
    assert build("gaussian", strength=0.1).params()["std"] == 0.1
    assert build("salt_pepper", strength=0.2, salt_vs_pepper=0.3).params()["amount"] == 0.2
    pgd = build("pgd_l2", model=model, strength=0.5, steps=7)
    assert isinstance(pgd, PGDL2) and pgd.params()["norm"] == "l2" and pgd.steps == 7
    apgd = build("apgd_dlr", model=model, eps=0.2)
    assert isinstance(apgd, APGD) and apgd.loss == "dlr" and apgd.eps == 0.2
    assert isinstance(build("gaussian", model=model, std=0.1), GaussianNoise)  # model ignored


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: build("pdg", strength=0.1), "did you mean 'pgd'"),
        (lambda: build("pgd", strength=0.1), "needs a model"),
        (lambda: build("pgd", model=small_net(), strength=0.1, stpes=3), "accepted: eps, alpha"),
        (lambda: build("apgd_dlr", model=small_net(), strength=0.1, loss="ce"), "fixes"),
        (lambda: build("gaussian"), "needs a strength"),
        (lambda: build("gaussian", strength=0.1, std=0.2), "only one"),
        (lambda: build("pgd", model=small_net(), strength=-1.0), "eps must be"),
        (lambda: build("pgd", model=small_net(), strength=0.1, steps=2.5), "steps"),
        (lambda: build("salt", strength=2.0), "amount"),
        (lambda: from_spec("pgd=0.1,norm=l7", small_net()), "norm"),
    ],
)
def test_registry_errors_are_config_errors_with_the_fix(
    call: Callable[[], Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        call()


def test_parse_spec_examples() -> None:
    assert parse_spec("gaussian=0.1") == ("gaussian", 0.1, {})
    assert parse_spec("pgd=0.3,steps=40,alpha=0.01") == ("pgd", 0.3, {"steps": 40, "alpha": 0.01})
    assert parse_spec("apgd=0.3,loss=dlr") == ("apgd", 0.3, {"loss": "dlr"})
    assert parse_spec(" fgsm ") == ("fgsm", None, {})
    name, strength, params = parse_spec("pgd=8/255, random_start=false, seed=3")
    assert (name, params) == ("pgd", {"random_start": False, "seed": 3})
    assert strength == pytest.approx(8 / 255)
    assert parse_spec("pgd=1") == ("pgd", 1.0, {})
    attack = from_spec("pgd=0.3,steps=40,random_start=False", small_net())
    assert isinstance(attack, PGD) and attack.steps == 40 and attack.random_start is False


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("=0.3", "no name"),
        ("gaussian=abc", "not a number"),
        ("gaussian=true", "not a number"),
        ("pgd=0.3,steps", "key=value"),
        ("pgd=0.3,=4", "key=value"),
        ("pgd=0.3,steps=", "key=value"),
        ("pgd=0.3,", "key=value"),
        ("pgd=0.3,steps=4,steps=5", "twice"),
    ],
)
def test_malformed_specs_raise_config_error(spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_spec(spec)


_keys = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True)
_values = (
    st.integers(-1000, 1000)
    | st.floats(0.001, 100.0)
    | st.booleans()
    | st.from_regex(r"[a-z][a-z_]{0,6}", fullmatch=True).filter(
        lambda s: s not in ("true", "false")
    )
)


@settings(max_examples=50, deadline=None)
@given(
    name=_keys,
    strength=st.none() | st.floats(0.0, 10.0),
    params=st.dictionaries(_keys, _values, max_size=4),
)
def test_parse_spec_round_trips(
    name: str, strength: float | None, params: dict[str, int | float | bool | str]
) -> None:
    def text(v: object) -> str:
        return (
            str(v).lower() if isinstance(v, bool) else repr(v) if isinstance(v, float) else str(v)
        )

    spec = name + ("" if strength is None else f"={strength!r}")
    spec += "".join(f",{k}={text(v)}" for k, v in params.items())
    parsed_name, parsed_strength, parsed_params = parse_spec(spec)
    assert (parsed_name, parsed_strength) == (name, strength)
    assert parsed_params == params
    assert [type(v) for v in parsed_params.values()] == [type(v) for v in params.values()]
