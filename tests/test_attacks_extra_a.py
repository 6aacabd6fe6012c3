"""MI-FGSM, CW-L∞ and the EOT attacks (EOT-PGD, EOT-APGD)."""

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
from lsakit.errors import ArgumentError, InputError
from lsakit.perturb import APGD, FGSM, PGD, Attack
from lsakit.perturb.cw import CWLinf, cw_margin_loss
from lsakit.perturb.eot import EOTAPGD, EOTPGD
from lsakit.perturb.mifgsm import MIFGSM, normalize_l1

AttackFactory = Callable[[nn.Module, float], Attack]

#: name → factory(model, eps) with a small budget; every attack the properties must hold for.
ATTACKS: dict[str, AttackFactory] = {
    "mifgsm": lambda model, eps: MIFGSM(model, eps=eps, steps=3),
    "cw": lambda model, eps: CWLinf(model, eps=eps, steps=3, seed=0),
    "eot_pgd": lambda model, eps: EOTPGD(model, eps=eps, steps=2, samples=3, seed=0),
    "eot_pgd_l2": lambda model, eps: EOTPGD(model, eps=eps, steps=2, samples=2, norm="l2", seed=0),
    "eot_apgd": lambda model, eps: EOTAPGD(model, eps=eps, steps=3, samples=2, seed=0),
}
L2_ATTACKS = {"eot_pgd_l2"}


def small_net(seed: int = 0) -> nn.Sequential:
    return attack_net(seed)


def batch(seed: int = 0, n: int = 6) -> tuple[Tensor, Tensor]:
    return attack_batch(seed, n)


# --------------------------------------------------------------------------------------------
# Properties shared by every attack of this file
# --------------------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(
    name=st.sampled_from(sorted(ATTACKS)),
    eps=st.floats(0.0, 0.5),
    data_seed=st.integers(0, 1000),
)
def test_result_lies_in_the_threat_model(name: str, eps: float, data_seed: int) -> None:
    x, y = batch(data_seed)
    x_adv = ATTACKS[name](small_net(), eps)(x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    if name in L2_ATTACKS:
        assert (delta.norm(dim=1) <= eps + 1e-5).all()
    else:
        assert delta.abs().max() <= eps + 1e-6


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_zero_eps_returns_a_copy_of_x(name: str) -> None:
    x, y = batch()
    x_adv = ATTACKS[name](small_net(), 0.0)(x, y)
    assert torch.equal(x_adv, x) and x_adv.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_inputs_are_not_mutated(name: str) -> None:
    x, y = batch()
    x.requires_grad_(True)
    x_before, y_before = x.detach().clone(), y.clone()
    x_adv = ATTACKS[name](small_net(), 0.2)(x, y)
    assert torch.equal(x.detach(), x_before) and torch.equal(y, y_before)
    assert x.grad is None and not x_adv.requires_grad
    assert not torch.equal(x_adv, x_before)  # the attack did move something


class _Recorder(nn.Module):
    """Counts forwards and records the training flag seen by each."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen_training: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen_training.append(self.training)
        out: Tensor = self.inner(x)
        return out


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_model_runs_in_eval_mode_and_mixed_modes_are_restored(name: str) -> None:
    net = small_net()
    recorder = _Recorder(net).train()
    net[2].eval()  # BatchNorm frozen, the rest training
    expected = modes(recorder)
    ATTACKS[name](recorder, 0.1)(*batch())
    assert recorder.seen_training and not any(recorder.seen_training)
    assert modes(recorder) == expected


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_parameter_grads_are_untouched(name: str) -> None:
    model = small_net()
    first, *rest = model.parameters()
    first.grad = torch.full_like(first, 0.25)
    ATTACKS[name](model, 0.2)(*batch())
    assert torch.equal(first.grad, torch.full_like(first, 0.25))
    assert all(p.grad is None for p in rest)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_dtype_follows_the_input(name: str) -> None:
    x, y = batch()
    x_adv = ATTACKS[name](small_net().double(), 0.1)(x.double(), y)
    assert x_adv.dtype == torch.float64


_NOT_AN_INT: Any = 1.5  # typed Any: the test passes a wrong type on purpose


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda m: MIFGSM(m, eps=0.1, decay=-1.0), "decay"),
        (lambda m: CWLinf(m, eps=-0.1), "eps"),
    ],
)
def test_bad_settings_raise_input_error(make: Callable[[nn.Module], Attack], match: str) -> None:
    with pytest.raises(InputError, match=match):
        make(small_net())


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda m: MIFGSM(m, eps=0.1, steps=0), "steps"),
        (lambda m: EOTPGD(m, eps=0.1, samples=0), "samples"),
        (lambda m: EOTAPGD(m, eps=0.1, samples=_NOT_AN_INT), "samples"),
    ],
)
def test_bad_counts_raise_argument_error(make: Callable[[nn.Module], Attack], match: str) -> None:
    with pytest.raises(ArgumentError, match=match):
        make(small_net())


def test_params_are_json_and_rebuild_the_attack() -> None:
    model = small_net()
    for attack in (
        MIFGSM(model, eps=0.2, steps=4, decay=0.5),
        CWLinf(model, eps=0.1, seed=3),
        EOTPGD(model, eps=0.1, samples=4, norm="l2"),
        EOTAPGD(model, eps=0.1, samples=5, loss="dlr"),
    ):
        params = json.loads(json.dumps(attack.params()))
        assert type(attack)(model, **params).params() == params
    assert MIFGSM(model, eps=0.2, steps=4).params() == {
        "eps": 0.2,
        "alpha": pytest.approx(0.05),
        "steps": 4,
        "decay": 1.0,
    }
    assert "norm" not in CWLinf(model, eps=0.1).params()
    assert EOTPGD(model, eps=0.1, samples=4).params()["samples"] == 4


# --------------------------------------------------------------------------------------------
# Exact values
# --------------------------------------------------------------------------------------------


def linear_model() -> nn.Linear:
    """3 inputs → 3 classes with hand-set weights, so input gradients are known in closed form."""
    model = nn.Linear(3, 3)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [-1.0, 1.0, 2.0], [0.5, 0.5, -1.0]]))
        model.bias.zero_()
    return model


def test_normalize_l1_by_hand() -> None:
    g = torch.tensor([[3.0, -1.0], [0.0, 0.0]])
    assert torch.equal(normalize_l1(g), torch.tensor([[0.75, -0.25], [0.0, 0.0]]))


def test_mifgsm_one_full_step_is_fgsm() -> None:
    model, x = linear_model(), torch.tensor([[0.5, 0.2, 0.9], [0.1, 0.6, 0.4]])
    y = torch.tensor([0, 2])
    expected = FGSM(model, eps=0.1)(x, y)
    assert torch.equal(MIFGSM(model, eps=0.1, steps=1)(x, y), expected)


def test_mifgsm_without_momentum_is_ifgsm() -> None:
    model = small_net()
    x, y = batch()
    ifgsm = PGD(model, eps=0.2, alpha=0.2 / 4, steps=4, random_start=False)(x, y)
    assert torch.equal(MIFGSM(model, eps=0.2, steps=4, decay=0.0)(x, y), ifgsm)


@pytest.mark.parametrize(
    ("decay", "second_point"), [(1.0, [0.7, 0.6]), (0.4, [0.5, 0.6]), (0.0, [0.5, 0.6])]
)
def test_mifgsm_momentum_by_hand(
    decay: float, second_point: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """g₁ = [4, 0] → [1, 0]; g₂ = [−1, 1] → [−½, ½]; μ·[1, 0] + [−½, ½] has sign [+, +] iff μ > ½."""
    scripted = iter([torch.tensor([[4.0, 0.0]]), torch.tensor([[-1.0, 1.0]])])
    attack = MIFGSM(nn.Linear(2, 2), eps=0.3, alpha=0.1, steps=2, decay=decay)

    def gradient(x_adv: Tensor, y: Tensor, *_: Any) -> tuple[Tensor, Tensor, Tensor]:
        return next(scripted), torch.zeros(1), torch.zeros(1, 2)

    monkeypatch.setattr(attack, "_loss_gradient", gradient)
    x_adv = attack(torch.tensor([[0.5, 0.5]]), torch.tensor([0]))
    torch.testing.assert_close(x_adv, torch.tensor([second_point]), rtol=0, atol=1e-6)


def test_cw_margin_loss_by_hand() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0], [0.0, 4.0, -1.0]])
    y = torch.tensor([1, 0, 0])
    assert torch.equal(cw_margin_loss(logits, y), torch.tensor([-1.0, -4.0, 4.0]))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), classes=st.integers(2, 6))
def test_cw_margin_is_positive_exactly_when_misclassified(seed: int, classes: int) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(8, classes, generator=g)
    y = torch.randint(0, classes, (8,), generator=g)
    assert torch.equal(cw_margin_loss(logits, y) > 0, logits.argmax(1) != y)


def test_cw_steps_along_the_margin_gradient() -> None:
    """On a linear model ∇ₓ(z_j − z_y) = W_j − W_y with j the best other class."""
    model, x = linear_model(), torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]])
    y = torch.tensor([0, 2])  # z = [−0.25, 1.0, 0.0]: the best other class is 1 for both
    w = model.weight.detach()
    direction = torch.stack([w[1] - w[0], w[1] - w[2]]).sign()
    x_adv = CWLinf(model, eps=0.1, alpha=0.1, steps=1, random_start=False)(x, y)
    torch.testing.assert_close(x_adv, x + 0.1 * direction, rtol=0, atol=1e-7)
    # Cross-entropy also pushes towards class 0 for the second sample, which flips a sign.
    ce = PGD(model, eps=0.1, alpha=0.1, steps=1, random_start=False)(x, y)
    assert not torch.equal(x_adv, ce)


def test_cw_restarts_rank_by_margin_not_cross_entropy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Logits = x. [0, .9, .9]: CE 1.78, margin .9; [0, 1, 0]: CE 1.55, margin 1 — the latter wins."""
    attack = CWLinf(nn.Identity(), eps=1.0, steps=1, restarts=2)
    candidates = iter([torch.tensor([[0.0, 0.9, 0.9]]), torch.tensor([[0.0, 1.0, 0.0]])])
    monkeypatch.setattr(attack, "_single_run", lambda x_run, y_run: next(candidates))
    x_adv = attack(torch.tensor([[0.5, 0.5, 0.5]]), torch.tensor([0]))
    assert torch.equal(x_adv, torch.tensor([[0.0, 1.0, 0.0]]))


def test_expected_gradient_is_the_cross_entropy_gradient_for_a_deterministic_model() -> None:
    model, x = linear_model(), torch.tensor([[0.5, 0.2, 0.9]])
    y = torch.tensor([2])
    w = model.weight.detach()
    p = torch.softmax(x @ w.T, dim=1)
    expected = (p - F.one_hot(y, 3).float()) @ w  # ∇ₓ CE = Wᵀ(softmax − onehot)
    grad = EOTPGD(model, eps=0.1, samples=7).expected_gradient(x, y)
    torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_eot_pgd_equals_pgd_exactly_on_a_deterministic_model(norm: Any) -> None:
    model = small_net()
    x, y = batch()
    plain = PGD(model, eps=0.2, steps=4, restarts=2, norm=norm, seed=1)(x, y)
    eot = EOTPGD(model, eps=0.2, steps=4, restarts=2, norm=norm, samples=5, seed=1)(x, y)
    assert torch.equal(eot, plain)


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_eot_apgd_equals_apgd_exactly_on_a_deterministic_model(loss: Any) -> None:
    model = small_net()
    x, y = batch()
    plain = APGD(model, eps=0.2, steps=6, loss=loss, seed=1)(x, y)
    assert torch.equal(EOTAPGD(model, eps=0.2, steps=6, loss=loss, samples=3, seed=1)(x, y), plain)


def test_eot_pgd_runs_samples_passes_per_step() -> None:
    recorder = _Recorder(small_net())
    EOTPGD(recorder, eps=0.1, steps=3, samples=4, seed=0)(*batch())
    assert len(recorder.seen_training) == 3 * 4


class NoisyNet(nn.Module):
    """A randomized model: Gaussian noise injected into the hidden layer at every forward."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first, self.second = nn.Linear(18, 32), nn.Linear(32, 4)

    def forward(self, x: Tensor) -> Tensor:
        hidden = torch.relu(self.first(x.flatten(1)))
        out: Tensor = self.second(hidden + torch.randn_like(hidden))
        return out


def test_eot_averaging_lowers_the_gradient_variance() -> None:
    """Averaging n independent passes divides the variance by n (here: expect ≈ 1/16)."""
    model, (x, y) = NoisyNet(), batch(n=4)

    def spread(samples: int) -> float:
        attack = EOTPGD(model, eps=0.1, samples=samples)
        grads = torch.stack([attack.expected_gradient(x, y) for _ in range(30)])
        return float(grads.var(dim=0).mean())

    single, averaged = spread(1), spread(16)
    assert single > 0  # the model really is random
    assert averaged < 0.25 * single


# --------------------------------------------------------------------------------------------
# A small trained model
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moons() -> tuple[nn.Module, Tensor, Tensor]:
    """A 2-64-64-2 MLP trained with Adam on make_moons scaled to [0, 1] (≈100 % clean)."""
    return trained_moons()


def test_iterative_attacks_beat_fgsm_on_a_trained_model(
    moons: tuple[nn.Module, Tensor, Tensor],
) -> None:
    model, x, y = moons
    clean = accuracy(model, x, y)
    fgsm = accuracy(model, FGSM(model, eps=0.1)(x, y), y)
    mifgsm = accuracy(model, MIFGSM(model, eps=0.1, steps=10)(x, y), y)
    cw = accuracy(model, CWLinf(model, eps=0.1, steps=20, seed=0)(x, y), y)
    assert clean > 0.95 and fgsm < clean
    assert mifgsm <= fgsm and cw <= fgsm
