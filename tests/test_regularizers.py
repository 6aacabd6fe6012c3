"""The layer-wise regularizer LR = Σ γ_l·CM(φ_l(x), φ_l(x̂)) (lsakit.train.regularizers)."""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from helpers import tiny_mlp
from lsakit.analysis import analyze
from lsakit.errors import ConfigError, InputError
from lsakit.perturb import PGD
from lsakit.probe import LayerProbe
from lsakit.train.objectives import build_objective
from lsakit.train.regularizers import (
    DEFAULT_GAMMA,
    DEFAULT_GRAD_THROUGH,
    LayerwiseRegularizer,
)


def t(rows: list[list[float]], grad: bool = False) -> Tensor:
    return torch.tensor(rows, dtype=torch.float64, requires_grad=grad)


# --------------------------------------------------------------------------------------------
# Exact values
# --------------------------------------------------------------------------------------------
def test_batch_value_is_gamma_times_one_frobenius_ratio() -> None:
    clean = t([[3.0, 0.0], [0.0, 4.0]])  # ‖clean‖_F = 5
    adv = t([[3.0, 0.0], [0.0, 1.0]])  # ‖clean − adv‖_F = 3
    reg = LayerwiseRegularizer(["L0"], gamma=2.0)
    assert float(reg([clean], [adv])) == pytest.approx(2.0 * 3.0 / 5.0, rel=1e-15)


def test_sample_reduction_averages_per_sample_ratios() -> None:
    clean = t([[3.0, 4.0], [1.0, 0.0]])
    adv = t([[3.0, 4.0], [0.0, 0.0]])  # ratios 0 and 1
    reg = LayerwiseRegularizer(["L0"], gamma=1.0, reduction="sample")
    assert float(reg([clean], [adv])) == pytest.approx(0.5, rel=1e-15)
    # The batch form differs: ‖(0, 0, 1, 0)‖ / ‖(3, 4, 1, 0)‖ = 1/√26.
    batch = LayerwiseRegularizer(["L0"], gamma=1.0)
    assert float(batch([clean], [adv])) == pytest.approx(1 / math.sqrt(26), rel=1e-15)


def test_higher_dimensional_representations_use_the_whole_tensor() -> None:
    clean = torch.ones(2, 3, 2, 2, dtype=torch.float64)  # ‖·‖ = √24
    adv = clean.clone()
    adv[1, 2, 1, 1] = 3.0  # difference of norm 2
    reg = LayerwiseRegularizer("L0")
    assert float(reg([clean], [adv])) == pytest.approx(DEFAULT_GAMMA * 2 / math.sqrt(24))


def test_per_layer_gammas_sequence_mapping_and_label_order() -> None:
    a0, b0 = t([[1.0, 0.0]]), t([[0.0, 0.0]])  # CM 1
    a2, b2 = t([[2.0, 0.0]]), t([[1.0, 0.0]])  # CM 0.5
    # Labels are sorted into forward order, each γ travelling with its layer.
    reg = LayerwiseRegularizer(["L2", "L0"], gamma=[10.0, 3.0])
    assert reg.layers == ["L0", "L2"] and reg.gammas == [3.0, 10.0]
    terms = reg.per_layer([a0, a2], [b0, b2])
    assert [float(v) for v in terms] == pytest.approx([3.0, 5.0])
    assert float(reg([a0, a2], [b0, b2])) == pytest.approx(8.0)
    mapped = LayerwiseRegularizer(["L0", "L2"], gamma={"L2": 10.0, "L0": 3.0})
    assert mapped.gammas == [3.0, 10.0]
    # Module names keep the given order.
    named = LayerwiseRegularizer(["fc3", "fc1"], gamma=[1.0, 2.0])
    assert named.layers == ["fc3", "fc1"] and named.gammas == [1.0, 2.0]


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(-5, 5), min_size=6, max_size=6),
    st.lists(st.floats(-5, 5), min_size=6, max_size=6),
    st.floats(0, 10),
)
def test_value_is_nonnegative_linear_in_gamma_and_zero_without_change(
    a: list[float], b: list[float], gamma: float
) -> None:
    clean, adv = torch.tensor(a).reshape(3, 2), torch.tensor(b).reshape(3, 2)
    one = LayerwiseRegularizer("L0", 1.0)([clean], [adv])
    scaled = LayerwiseRegularizer("L0", gamma)([clean], [adv])
    assert float(one) >= 0
    assert float(scaled) == pytest.approx(gamma * float(one), rel=1e-5, abs=1e-6)
    assert float(LayerwiseRegularizer("L0", gamma)([clean], [clean])) == 0.0


# --------------------------------------------------------------------------------------------
# Gradient routing and undefined values
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("grad_through", "clean_grad", "adv_grad"),
    [("both", True, True), ("adversarial", False, True), ("clean", True, False)],
)
def test_grad_through_decides_which_representation_gets_a_gradient(
    grad_through: Any, clean_grad: bool, adv_grad: bool
) -> None:
    clean = t([[1.0, 2.0], [3.0, 1.0]], grad=True)
    adv = t([[0.5, 2.5], [3.0, 0.0]], grad=True)
    LayerwiseRegularizer("L0", grad_through=grad_through)([clean], [adv]).backward()
    assert (clean.grad is not None and float(clean.grad.abs().sum()) > 0) == clean_grad
    assert (adv.grad is not None and float(adv.grad.abs().sum()) > 0) == adv_grad


def test_gradient_matches_the_analytic_derivative() -> None:
    # d/db ‖a − b‖/‖a‖ = (b − a)/(‖a − b‖·‖a‖)
    a, b = t([[3.0, 4.0]]), t([[0.0, 0.0]], grad=True)
    LayerwiseRegularizer("L0", 1.0, grad_through="adversarial")([a], [b]).backward()
    assert b.grad is not None
    torch.testing.assert_close(b.grad, (b.detach() - a) / (5.0 * 5.0))


@pytest.mark.parametrize("reduction", ["batch", "sample"])
def test_all_zero_clean_representation_contributes_zero_and_is_counted(reduction: Any) -> None:
    zero = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    adv = t([[1.0] * 4] * 3, grad=True)
    other_clean = t([[1.0, 0.0, 0.0, 0.0]] * 3)
    other_adv = t([[0.0, 0.0, 0.0, 0.0]] * 3)  # CM = 1 in both reductions
    reg = LayerwiseRegularizer(["L0", "L1"], reduction=reduction)
    value = reg([zero, other_clean], [adv, other_adv])
    value.backward()
    assert float(value.detach()) == pytest.approx(DEFAULT_GAMMA * 1.0)
    assert reg.last_undefined is not None
    assert int(reg.last_undefined) == (1 if reduction == "batch" else 3)
    for g in (zero.grad, adv.grad):
        assert g is not None and torch.isfinite(g).all() and float(g.abs().sum()) == 0


def test_sample_reduction_averages_over_the_defined_samples_only() -> None:
    clean = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 0.0]], requires_grad=True)
    adv = torch.tensor([[5.0, 5.0], [1.0, 0.0], [1.0, 0.0]])  # ratios: undefined, 0.5, 0
    reg = LayerwiseRegularizer("L0", 1.0, reduction="sample")
    value = reg([clean], [adv])
    value.backward()
    assert float(value.detach()) == pytest.approx(0.25)
    assert int(reg.last_undefined or 0) == 1
    assert clean.grad is not None and torch.isfinite(clean.grad).all()


def test_identical_representations_give_zero_and_finite_gradient() -> None:
    clean = t([[1.0, 2.0]], grad=True)
    adv = clean.detach().clone().requires_grad_(True)
    value = LayerwiseRegularizer("L0")([clean], [adv])
    value.backward()
    assert float(value.detach()) == 0.0
    assert clean.grad is not None and torch.isfinite(clean.grad).all()


# --------------------------------------------------------------------------------------------
# With objectives and a probe
# --------------------------------------------------------------------------------------------
def test_with_trades_and_a_probe_the_term_trains_the_layer() -> None:
    model = tiny_mlp().train()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    reg = LayerwiseRegularizer(["L1"], gamma=1.0)
    objective = build_objective("trades", eps=0.2, alpha=0.05, steps=3, seed=0)
    with LayerProbe(model, reg.layers, detach=False) as probe:
        out = objective(model, x, y, probe)
        reg.check_probe(probe)
    term = reg(out.clean_reps, out.adv_reps)
    grads = torch.autograd.grad(term, list(model.parameters()), allow_unused=True)
    assert grads[-1] is None or float(grads[-1].abs().sum()) == 0  # head is after L1
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads[:4])
    # One small descent step on LR alone lowers LR at the same (x, x̂): the term is a real loss.
    assert out.x_adv is not None
    with torch.no_grad():
        for p, gr in zip(model.parameters(), grads, strict=True):
            if gr is not None:
                p -= 1e-2 * gr
        after = reg([model[:4](x)], [model[:4](out.x_adv)])
    assert float(after) < float(term.detach())


def test_objective_without_clean_forward_is_reported_clearly() -> None:
    model = tiny_mlp().train()
    x, y = torch.rand(4, 4), torch.tensor([0, 1, 2, 0])
    reg = LayerwiseRegularizer("L0")
    with LayerProbe(model, reg.layers, detach=False) as probe:
        out = build_objective("fgsm", eps=0.1)(model, x, y, probe)
    with pytest.raises(InputError, match="clean representations"):
        reg(out.clean_reps, out.adv_reps)


def test_wrong_number_of_representations_is_reported() -> None:
    reg = LayerwiseRegularizer(["L0", "L1"])
    with pytest.raises(InputError, match="1 clean and 1 adversarial representations for 2"):
        reg([t([[1.0]])], [t([[1.0]])])


def test_check_probe_verifies_module_order() -> None:
    model = tiny_mlp()
    x = torch.rand(2, 4)
    with LayerProbe(model, ["3", "1"], detach=False) as probe:
        model(x)
        probe.take()
        LayerwiseRegularizer(["1", "3"]).check_probe(probe)
        with pytest.raises(ConfigError, match=r"forward order \['1', '3'\]"):
            LayerwiseRegularizer(["3", "1"]).check_probe(probe)
        with pytest.raises(ConfigError, match="captures 2 representations"):
            LayerwiseRegularizer(["1"]).check_probe(probe)


# --------------------------------------------------------------------------------------------
# from_mvl
# --------------------------------------------------------------------------------------------
def deep_mlp(seed: int = 0) -> nn.Sequential:
    """4 → 16 → 16 → 16 → 16 → 3 with four ELU layers L0..L3."""
    torch.manual_seed(seed)
    layers: list[tuple[str, nn.Module]] = []
    width = 4
    for i in range(4):
        layers += [(f"fc{i}", nn.Linear(width, 16)), (f"act{i}", nn.ELU())]
        width = 16
    layers.append(("head", nn.Linear(16, 3)))
    return nn.Sequential(OrderedDict(layers))


def batches() -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(4)
    return [
        (torch.rand(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)) for _ in range(3)
    ]


@pytest.mark.parametrize("eta", [-5.0, -0.1, 0.0])
def test_from_mvl_selects_what_algorithm_1_selects(eta: float) -> None:
    model = deep_mlp()
    data = batches()
    reference = analyze(model, data, {"pgd": PGD(model, eps=0.1, steps=10, seed=0)})
    expected = [layer.label for layer in reference.most_vulnerable_layers(eta)]
    assert expected  # the test is only meaningful with a non-empty list
    reg = LayerwiseRegularizer.from_mvl(model, data, eps=0.1, eta=eta, gamma=0.5)
    assert reg.layers == expected and reg.gammas == [0.5] * len(expected)
    assert reg.lsa_result is not None
    assert [p.means() for p in reg.lsa_result.perturbations] == [
        p.means() for p in reference.perturbations
    ]
    # A custom attack is used as given.
    custom = PGD(model, eps=0.1, steps=10, seed=0)
    assert LayerwiseRegularizer.from_mvl(model, data, attack=custom, eta=eta).layers == expected


def test_from_mvl_eta_changes_the_list_monotonically() -> None:
    model, data = deep_mlp(), batches()
    low = LayerwiseRegularizer.from_mvl(model, data, eps=0.1, eta=-5.0).layers
    high = LayerwiseRegularizer.from_mvl(model, data, eps=0.1, eta=0.0).layers
    assert set(high) <= set(low) and len(low) > len(high)


def test_from_mvl_empty_list_names_eta() -> None:
    with pytest.raises(ConfigError, match=r"MVL list is empty at eta=100.*lower eta"):
        LayerwiseRegularizer.from_mvl(deep_mlp(), batches(), eps=0.1, eta=100.0)


def test_from_mvl_needs_a_budget_and_accepts_a_wider_gamma_mapping() -> None:
    with pytest.raises(ConfigError, match="eps="):
        LayerwiseRegularizer.from_mvl(deep_mlp(), batches())
    gammas = {f"L{k}": float(k + 1) for k in range(4)}
    reg = LayerwiseRegularizer.from_mvl(deep_mlp(), batches(), eps=0.1, eta=-5.0, gamma=gammas)
    assert reg.gammas == [gammas[label] for label in reg.layers]


# --------------------------------------------------------------------------------------------
# Validation and description
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("layers", "gamma", "kw", "match"),
    [
        (["L0"], -1.0, {}, "finite number ≥ 0"),
        (["L0"], float("nan"), {}, "finite number ≥ 0"),
        (["L0"], True, {}, "must be a number"),
        (["L0"], "1", {}, "must be a number"),
        (["L0", "L1"], [1.0], {}, "1 values for 2 layers"),
        (["L0", "L1"], [1.0, -2.0], {}, "of layer L1"),
        (["L0", "L1"], {"L0": 1.0}, {}, r"missing \['L1'\]"),
        (["L0"], {"L0": 1.0, "L5": 1.0}, {}, r"unknown \['L5'\]"),
        ([], 1.0, {}, "at least one layer"),
        (["mvl"], 1.0, {}, "from_mvl"),
        ("mvl", 1.0, {}, "from_mvl"),
        (["fc*"], 1.0, {}, "glob"),
        (["L0", "L0"], 1.0, {}, "listed twice"),
        (["L0", "fc1"], 1.0, {}, "mixing"),
        (["L0"], 1.0, {"grad_through": "x"}, "grad_through must be one of both"),
        (["L0"], 1.0, {"reduction": "none"}, "reduction must be one of batch, sample"),
    ],
)
def test_bad_settings_raise_config_error(layers: Any, gamma: Any, kw: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        LayerwiseRegularizer(layers, gamma, **kw)


def test_describe_is_json_and_complete() -> None:
    reg = LayerwiseRegularizer(["L2", "L0"], [1.0, 0.5], reduction="sample")
    described = reg.describe()
    assert json.loads(json.dumps(described)) == {
        "layers": ["L0", "L2"],
        "gammas": [0.5, 1.0],
        "grad_through": DEFAULT_GRAD_THROUGH,
        "reduction": "sample",
    }
    assert "L0" in repr(reg)
