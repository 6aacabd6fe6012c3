"""Training objectives: standard, AT-FGSM/FAST/PGD/TRADES/MART/APGD (lsakit.train.objectives)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from helpers import tiny_cnn, tiny_mlp
from lsakit.errors import ConfigError, InputError
from lsakit.probe import LayerProbe
from lsakit.train.objectives import (
    CIFAR10_RECIPE,
    MNIST_RECIPE,
    FastObjective,
    MARTObjective,
    PGDObjective,
    RandomStartFGSM,
    TradesAttack,
    TradesObjective,
    build_objective,
    mart_loss,
    mart_terms,
    objective_names,
    objective_parameters,
    trades_loss,
)

ALL = ["standard", "fgsm", "fast", "pgd", "trades", "mart", "apgd", "pni"]
ADVERSARIAL = [n for n in ALL if n != "standard"]
#: Training forwards each objective's loss needs (the issue's budget): clean and/or adversarial.
TRAINING_FORWARDS = {
    "standard": 1,
    "fgsm": 1,
    "fast": 1,
    "pgd": 1,
    "apgd": 1,
    "trades": 2,
    "mart": 2,
    "pni": 2,
}


def make(name: str, eps: float = 0.1, **extra: Any) -> Any:
    """A cheap instance of objective ``name`` (few steps) for the property tests."""
    params: dict[str, Any] = {} if name == "standard" else {"eps": eps}
    if name in ("pgd", "trades", "mart", "apgd", "pni"):
        params["steps"] = 3
    if name in ("pgd", "trades", "mart", "pni"):
        params["alpha"] = eps / 2
    if name in ("fast", "pgd", "trades", "mart", "apgd", "pni"):
        params["seed"] = 0
    return build_objective(name, **{**params, **extra})


def batch_mlp(n: int = 16) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def batch_cnn(n: int = 6) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 5, (n,), generator=g)


# --------------------------------------------------------------------------------------------
# Properties every objective has
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_loss_is_a_finite_scalar_with_grad_to_every_parameter(name: str) -> None:
    model = tiny_cnn().train()
    x, y = batch_cnn()
    out = make(name)(model, x, y)
    assert out.loss.dim() == 0 and math.isfinite(float(out.loss.detach()))
    out.loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", ALL)
def test_mode_restored_inputs_untouched_and_attack_forwards_in_eval(name: str) -> None:
    model = tiny_cnn().train()
    bn = model[1]
    assert isinstance(bn, nn.BatchNorm2d)
    x, y = batch_cnn()
    x0, y0 = x.clone(), y.clone()
    make(name)(model, x, y)
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(x, x0) and torch.equal(y, y0) and not x.requires_grad
    # BatchNorm statistics move once per TRAINING forward only: attacks run in eval mode.
    assert int(bn.num_batches_tracked) == TRAINING_FORWARDS[name]


@pytest.mark.parametrize("name", ADVERSARIAL)
@pytest.mark.parametrize("eps", [0.0, 0.05, 0.3])
def test_adversarial_batch_lies_in_the_threat_model(name: str, eps: float) -> None:
    model = tiny_mlp().train()
    x, y = batch_mlp()
    x[0] = 0.0  # corners, where the [0, 1] clamp matters
    x[1] = 1.0
    out = make(name, eps=eps)(model, x, y)
    assert out.x_adv is not None and out.x_adv.shape == x.shape
    assert float((out.x_adv - x).abs().max()) <= eps + 1e-6
    assert float(out.x_adv.min()) >= 0.0 and float(out.x_adv.max()) <= 1.0
    if eps == 0:
        assert torch.equal(out.x_adv, x)
    assert out.adv_logits is not None and out.adv_logits.shape == (16, 3)


def test_standard_equals_cross_entropy_exactly() -> None:
    model = tiny_mlp().train()
    x, y = batch_mlp()
    out = build_objective("standard")(model, x, y)
    assert torch.equal(out.loss, F.cross_entropy(model(x), y))
    assert out.x_adv is None and out.adv_logits is None and out.clean_logits is not None


@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd"])
def test_adversarial_ce_is_the_cross_entropy_on_x_adv(name: str) -> None:
    model = tiny_mlp().train()
    x, y = batch_mlp()
    out = make(name)(model, x, y)
    assert out.x_adv is not None
    assert torch.equal(out.loss, F.cross_entropy(model(out.x_adv), y))
    assert out.clean_logits is None


def test_fgsm_objective_uses_the_fgsm_point() -> None:
    from lsakit.perturb import FGSM

    model = tiny_mlp().train()
    x, y = batch_mlp()
    out = build_objective("fgsm", eps=0.1)(model, x, y)
    assert out.x_adv is not None
    assert torch.equal(out.x_adv, FGSM(model, eps=0.1)(x, y))


# --------------------------------------------------------------------------------------------
# TRADES
# --------------------------------------------------------------------------------------------
def test_trades_with_beta_zero_is_the_clean_cross_entropy_exactly() -> None:
    model = tiny_mlp().train()
    x, y = batch_mlp()
    out = make("trades", beta=0.0)(model, x, y)
    assert torch.equal(out.loss, F.cross_entropy(model(x), y))


@pytest.mark.parametrize("seed", range(4))
def test_trades_kl_term_is_nonnegative_and_matches_the_formula(seed: int) -> None:
    model = tiny_mlp(seed).train()
    x, y = batch_mlp()
    out = make("trades", beta=1.0)(model, x, y)
    assert out.x_adv is not None and out.clean_logits is not None and out.adv_logits is not None
    ce = F.cross_entropy(out.clean_logits, y)
    kl = F.kl_div(
        F.log_softmax(out.adv_logits, dim=1),
        F.log_softmax(out.clean_logits, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    assert float(kl.detach()) >= 0.0
    torch.testing.assert_close(out.loss, ce + kl)


def test_trades_inner_max_increases_the_kl() -> None:
    torch.manual_seed(0)
    model = tiny_mlp().eval()
    x, y = batch_mlp()
    attack = TradesAttack(model, eps=0.2, alpha=0.05, steps=10, seed=0)
    x_adv = attack(x, y)
    with torch.no_grad():
        p = F.log_softmax(model(x), dim=1)
        kl_adv = F.kl_div(F.log_softmax(model(x_adv), 1), p, reduction="sum", log_target=True)
        x_rand = (x + 0.2 * (2 * torch.rand_like(x) - 1)).clamp(0, 1)
        kl_rand = F.kl_div(F.log_softmax(model(x_rand), 1), p, reduction="sum", log_target=True)
    assert float(kl_adv) > float(kl_rand) > 0


def test_trades_loss_function_equals_the_objective() -> None:
    model = tiny_mlp().train()
    x, y = batch_mlp()
    torch.manual_seed(5)
    a = trades_loss(model, x, y, eps=0.1, alpha=0.02, steps=3, beta=2.0)
    torch.manual_seed(5)
    b = TradesObjective(eps=0.1, alpha=0.02, steps=3, beta=2.0)(model, x, y).loss
    assert torch.equal(a, b) and a.requires_grad


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-20, 20), min_size=6, max_size=6))
def test_trades_kl_is_nonnegative_for_any_logits(values: list[float]) -> None:
    from lsakit.train.objectives import _kl_per_sample

    logits = torch.tensor(values, dtype=torch.float64).reshape(2, 3)
    other = logits.flip(1)
    assert bool((_kl_per_sample(F.log_softmax(logits, 1), other) >= -1e-12).all())
    assert torch.allclose(
        _kl_per_sample(F.log_softmax(logits, 1), logits), torch.zeros(2, dtype=torch.float64)
    )


# --------------------------------------------------------------------------------------------
# MART
# --------------------------------------------------------------------------------------------
def _softmax(z: list[float]) -> list[float]:
    m = max(z)
    e = [math.exp(v - m) for v in z]
    return [v / sum(e) for v in e]


def _mart_by_hand(
    clean: list[list[float]], adv: list[list[float]], y: list[int], beta: float
) -> float:
    """MART (Wang et al. 2020, Eq. 9) with plain floats: BCE on x̂ + β·mean(KL·(1 − p_y(x)))."""
    total_bce = total_kl = 0.0
    for zc, za, label in zip(clean, adv, y, strict=True):
        p, q = _softmax(zc), _softmax(za)
        wrong = max((k for k in range(len(q)) if k != label), key=lambda k: q[k])
        total_bce += -math.log(q[label]) - math.log(1 - q[wrong])
        kl = sum(pk * (math.log(pk) - math.log(qk)) for pk, qk in zip(p, q, strict=True))
        total_kl += kl * (1 - p[label])
    return total_bce / len(y) + beta * total_kl / len(y)


def linear3() -> nn.Linear:
    """A hand-built 3-class linear model on 2 features."""
    layer = nn.Linear(2, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[2.0, -1.0], [-1.0, 3.0], [0.5, 0.5]]))
        layer.bias.copy_(torch.tensor([0.1, -0.2, 0.0]))
    return layer


def test_mart_on_a_linear_three_class_model_matches_the_hand_computation() -> None:
    model = linear3().double().train()
    x = torch.tensor([[0.2, 0.7], [0.9, 0.1], [0.5, 0.5], [0.3, 0.3]], dtype=torch.float64)
    y = torch.tensor([1, 0, 2, 1])
    out = MARTObjective(eps=0.2, alpha=0.1, steps=4, beta=6.0, seed=0)(model, x, y)
    assert out.x_adv is not None
    with torch.no_grad():
        clean, adv = model(x).tolist(), model(out.x_adv).tolist()
    expected = _mart_by_hand(clean, adv, y.tolist(), beta=6.0)
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-12)
    # The official code's ε-constants (1.0001, 1e-12, 1.0000001) change it by < 1e-3 relative.
    q = F.softmax(model(out.x_adv), 1)
    top2 = q.argsort(1)[:, -2:]
    new_y = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    p = F.softmax(model(x), 1)
    official = F.cross_entropy(model(out.x_adv), y) + F.nll_loss(
        torch.log(1.0001 - q + 1e-12), new_y
    )
    official = (
        official
        + 6.0
        * (
            (p * (p.log() - (q + 1e-12).log())).sum(1) * (1.0000001 - p.gather(1, y[:, None])[:, 0])
        ).mean()
    )
    assert float(out.loss.detach()) == pytest.approx(float(official.detach()), rel=1e-3)


def test_mart_terms_with_identical_logits_leave_only_the_boosted_ce() -> None:
    logits = torch.tensor([[3.0, 0.0, -1.0]], dtype=torch.float64)
    bce, kl = mart_terms(logits, logits, torch.tensor([0]))
    p = _softmax([3.0, 0.0, -1.0])
    assert float(kl) == pytest.approx(0.0, abs=1e-15)
    assert float(bce) == pytest.approx(-math.log(p[0]) - math.log(1 - p[1]), rel=1e-12)


def test_mart_is_stable_when_the_wrong_class_is_certain() -> None:
    logits = torch.tensor([[0.0, 200.0, -5.0]], requires_grad=True)
    bce, kl = mart_terms(logits.detach(), logits, torch.tensor([0]))
    (bce + kl).backward()
    assert math.isfinite(float(bce.detach())) and logits.grad is not None
    assert torch.isfinite(logits.grad).all()


def test_mart_loss_function_equals_the_objective() -> None:
    model = tiny_mlp().train()
    x, y = batch_mlp()
    torch.manual_seed(3)
    a = mart_loss(model, x, y, eps=0.1, alpha=0.05, steps=2, beta=3.0)
    torch.manual_seed(3)
    b = MARTObjective(eps=0.1, alpha=0.05, steps=2, beta=3.0)(model, x, y).loss
    assert torch.equal(a, b) and a.requires_grad


# --------------------------------------------------------------------------------------------
# Fast AT
# --------------------------------------------------------------------------------------------
def linear2() -> nn.Linear:
    """2 classes, w1 − w0 = (−2, −2): ∇ₓ CE has sign (−1, −1) for y = 0 and (+1, +1) for y = 1."""
    layer = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.0]]))
    return layer


def test_fast_takes_one_step_of_one_and_a_quarter_eps_from_the_seeded_start() -> None:
    eps, seed = 0.1, 7
    x = torch.full((16, 2), 0.5)
    y = torch.arange(16) % 2
    out = FastObjective(eps=eps, seed=seed)(linear2(), x, y)
    # Hand computation: the start draws U[0, 1) from a generator seeded with `seed`.
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(seed))
    start = x + (2 * u - 1) * eps
    sign = torch.where(y == 0, -1.0, 1.0)[:, None].expand_as(x)
    expected = x + (start + 1.25 * eps * sign - x).clamp(-eps, eps)
    assert out.x_adv is not None
    torch.testing.assert_close(out.x_adv, expected, rtol=0, atol=1e-7)
    # Some coordinates end strictly inside the ball: there a step of ε would land elsewhere.
    with_eps_step = x + (start + eps * sign - x).clamp(-eps, eps)
    assert float((with_eps_step - out.x_adv).abs().max()) > 1e-3


def test_seeded_attacks_advance_across_batches_and_replay_across_objects() -> None:
    model = tiny_mlp().train()
    x, y = batch_mlp()
    first = FastObjective(eps=0.1, seed=3)
    a1, a2 = first(model, x, y).x_adv, first(model, x, y).x_adv
    b1 = FastObjective(eps=0.1, seed=3)(model, x, y).x_adv
    assert a1 is not None and a2 is not None and b1 is not None
    assert torch.equal(a1, b1) and not torch.equal(a1, a2)


def test_random_start_fgsm_default_step() -> None:
    assert RandomStartFGSM(tiny_mlp(), eps=0.2).alpha == pytest.approx(0.25)
    assert FastObjective(eps=0.2, alpha=0.1).alpha == 0.1


# --------------------------------------------------------------------------------------------
# With a probe
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_probe_captures_only_the_training_forwards(name: str) -> None:
    model = tiny_cnn().train()
    x, y = batch_cnn()
    calls: list[tuple[bool, bool]] = []  # (training mode, probe paused) at each forward
    with LayerProbe(model, ["L0", "L2"], detach=False) as probe:
        model.register_forward_pre_hook(lambda m, a: calls.append((m.training, probe._paused)))
        out = make(name)(model, x, y, probe)
    captured = [training for training, paused in calls if not paused]
    assert len(captured) == TRAINING_FORWARDS[name]
    assert all(captured)  # every captured forward is a training-mode forward …
    assert not any(training for training, paused in calls if paused)  # … and attacks ran in eval
    expected = {
        "clean": name in ("standard", "trades", "mart", "pni"),
        "adv": name != "standard",
    }
    for kind, reps in (("clean", out.clean_reps), ("adv", out.adv_reps)):
        if not expected[kind]:
            assert reps is None
            continue
        assert reps is not None and len(reps) == 2
        assert reps[0].shape == (6, 4, 8, 8) and reps[1].shape == (6, 10)
        assert all(r.requires_grad for r in reps)
    assert [layer.module_name for layer in probe.layers] == ["2", "8"]


@pytest.mark.parametrize("name", ["trades", "mart"])
def test_captured_representations_are_those_of_x_and_x_adv(name: str) -> None:
    model = tiny_mlp().train()
    x, y = batch_mlp()
    with LayerProbe(model, ["L1"], detach=False) as probe:
        out = make(name)(model, x, y, probe)
    assert out.clean_reps is not None and out.adv_reps is not None and out.x_adv is not None
    assert torch.equal(out.clean_reps[0], model[:4](x))
    assert torch.equal(out.adv_reps[0], model[:4](out.x_adv))
    # The representations carry the graph to the parameters.
    grad = torch.autograd.grad(out.adv_reps[0].sum(), model[0].weight)[0]
    assert float(grad.abs().sum()) > 0


def test_an_inactive_probe_is_reported() -> None:
    model = tiny_mlp()
    x, y = batch_mlp()
    probe = LayerProbe(model, ["L0"], detach=False)
    with pytest.raises(InputError, match="not active"):
        make("standard")(model, x, y, probe)


# --------------------------------------------------------------------------------------------
# Registry, parameters, validation
# --------------------------------------------------------------------------------------------
def test_names_and_needs_clean_forward() -> None:
    assert objective_names() == ALL
    clean = {n for n in ALL if build_objective(n).needs_clean_forward}
    assert clean == {"standard", "trades", "mart", "pni"}


@pytest.mark.parametrize("name", ALL)
def test_params_are_json_and_rebuild_the_same_objective(name: str) -> None:
    objective = make(name)
    params = objective.params()
    json.dumps(params)
    assert set(params) <= set(objective_parameters(name))
    assert build_objective(name, **params).params() == params


def test_defaults_are_the_mnist_recipe() -> None:
    for name in ("pgd", "trades", "mart"):
        params = build_objective(name).params()
        assert {k: params[k] for k in MNIST_RECIPE} == MNIST_RECIPE
    assert build_objective("trades").params()["beta"] == 6.0
    assert build_objective("mart").params()["beta"] == 6.0
    assert build_objective("trades", **CIFAR10_RECIPE).params()["steps"] == 10


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("pgdd", {}, "did you mean 'pgd'"),
        ("nope", {}, "known training objectives: standard"),
        ("pgd", {"beta": 1.0}, "no parameter beta; it accepts: eps"),
        ("standard", {"eps": 0.1}, "no parameter eps"),
        ("fgsm", {"eps": -0.1}, "'fgsm': eps must be a finite number ≥ 0"),
        ("trades", {"steps": 0}, "steps must be an integer ≥ 1"),
        ("mart", {"beta": float("nan")}, "beta must be a finite number"),
    ],
)
def test_bad_configuration_raises_config_error(
    name: str, params: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        build_objective(name, **params)


def test_direct_construction_validates_as_input_error() -> None:
    with pytest.raises(InputError, match="eps"):
        PGDObjective(eps=-1.0)


@pytest.mark.parametrize("name", ["standard", "pgd", "trades"])
def test_bad_batches_raise_input_error(name: str) -> None:
    model = tiny_mlp().train()
    x, y = batch_mlp()
    objective = make(name)
    with pytest.raises(InputError, match=r"outside \[0, 1\]"):
        objective(model, x * 3, y)
    with pytest.raises(InputError, match="expected"):
        objective(model, x, y[:-1])
    with pytest.raises(InputError, match="classes"):
        objective(model, x, torch.full_like(y, 7))
    with pytest.raises(InputError, match="integer"):
        objective(model, x, y.float())


def test_pni_is_half_clean_half_adversarial_ce_with_the_models_own_labels() -> None:
    model = tiny_mlp()
    x, y = batch_mlp()
    objective = make("pni")
    torch.manual_seed(3)
    out = objective(model, x, y)
    assert out.clean_logits is not None and out.adv_logits is not None
    expected = 0.5 * F.cross_entropy(out.clean_logits, y) + 0.5 * F.cross_entropy(out.adv_logits, y)
    assert torch.allclose(out.loss, expected)
    # The attack was given the model's own predictions: the same PGD on them reproduces x̂.
    predicted = out.clean_logits.argmax(dim=1)
    from lsakit.perturb import PGD

    pgd = PGD(model, eps=0.1, alpha=0.05, steps=3, seed=0)
    assert out.x_adv is not None and torch.equal(out.x_adv, pgd(x, predicted))
