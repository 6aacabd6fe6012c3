"""APGD-T (targeted DLR) and the Square Attack (score-based black box), both L∞."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import make_blobs, make_moons
from torch import Tensor, nn

from helpers import accuracy, attack_batch, attack_net, modes, train_mlp, unit_scaled
from lsakit.errors import ArgumentError, ConfigError, InputError
from lsakit.perturb import apgd_targeted
from lsakit.perturb.apgd_targeted import APGDT, target_classes, targeted_dlr_loss
from lsakit.perturb.base import Attack
from lsakit.perturb.fgsm import FGSM
from lsakit.perturb.square import Square, as_images, margin, p_schedule, square_side

AttackFactory = Callable[..., Attack]

#: name → factory(model, eps, budget): the properties below must hold for each.
ATTACKS: dict[str, AttackFactory] = {
    "apgd_t": lambda model, eps, budget=3, seed=0: APGDT(
        model, eps=eps, steps=budget, n_target_classes=3, seed=seed
    ),
    "square": lambda model, eps, budget=3, seed=0: Square(
        model, eps=eps, queries=budget * 10, seed=seed
    ),
}


def small_net(seed: int = 0) -> nn.Sequential:
    """5 classes: targeted DLR needs at least 4."""
    return attack_net(seed, side=4, classes=5)


def batch(seed: int = 0, n: int = 6) -> tuple[Tensor, Tensor]:
    return attack_batch(seed, n, side=4, classes=5)


@pytest.fixture(scope="module")
def blobs() -> tuple[nn.Module, Tensor, Tensor]:
    """A 2-64-64-4 MLP trained on four slightly overlapping Gaussian blobs scaled to [0, 1]."""
    features, labels = make_blobs(n_samples=300, centers=4, cluster_std=1.0, random_state=0)
    x, y = unit_scaled(features), torch.tensor(labels)
    return train_mlp(x, y, 4, steps=300), x, y


@pytest.fixture(scope="module")
def moons() -> tuple[nn.Module, Tensor, Tensor]:
    """A 2-64-64-2 MLP trained on make_moons scaled to [0, 1]."""
    features, labels = make_moons(n_samples=300, noise=0.1, random_state=0)
    x, y = unit_scaled(features), torch.tensor(labels)
    return train_mlp(x, y, 2, steps=300), x, y


# --------------------------------------------------------------------------------------------
# Properties shared by both attacks
# --------------------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    name=st.sampled_from(sorted(ATTACKS)),
    eps=st.floats(0.0, 0.5),
    budget=st.integers(1, 4),
    data_seed=st.integers(0, 1000),
)
def test_result_lies_in_the_threat_model(
    name: str, eps: float, budget: int, data_seed: int
) -> None:
    x, y = batch(data_seed)
    x_adv = ATTACKS[name](small_net(), eps, budget=budget)(x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= eps + 1e-6


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_zero_eps_returns_x_exactly(name: str) -> None:
    x, y = batch()
    x_adv = ATTACKS[name](small_net(), 0.0)(x, y)
    assert torch.equal(x_adv, x)
    assert x_adv.data_ptr() != x.data_ptr()  # a copy, not the caller's tensor


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_inputs_are_not_mutated(name: str) -> None:
    x, y = batch()
    x.requires_grad_(True)
    x_before, y_before = x.detach().clone(), y.clone()
    x_adv = ATTACKS[name](small_net(), 0.2)(x, y)
    assert torch.equal(x.detach(), x_before) and torch.equal(y, y_before)
    assert x.grad is None and not x_adv.requires_grad
    assert not torch.equal(x_adv, x_before)  # the attack did move something


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_runs_in_eval_mode_and_restores_mixed_modes(name: str) -> None:
    model = small_net().train()
    model[4].eval()  # Dropout alone in eval: a mixed state to restore exactly
    before = modes(model)
    seen: list[bool] = []
    model.register_forward_pre_hook(lambda module, _: seen.append(module.training))
    x, y = batch()
    ATTACKS[name](model, 0.1)(x, y)
    assert seen and not any(seen)
    assert modes(model) == before


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_parameter_grads_are_untouched(name: str) -> None:
    model = small_net()
    params = list(model.parameters())
    params[0].grad = torch.full_like(params[0], 3.0)
    x, y = batch()
    ATTACKS[name](model, 0.1)(x, y)
    assert torch.equal(params[0].grad, torch.full_like(params[0], 3.0))
    assert all(p.grad is None for p in params[1:])


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_same_seed_same_result(name: str) -> None:
    x, y = batch()
    first = ATTACKS[name](small_net(), 0.1, seed=7)(x, y)
    torch.manual_seed(123)  # a seeded attack ignores the global generator
    assert torch.equal(ATTACKS[name](small_net(), 0.1, seed=7)(x, y), first)


def test_params_are_json_and_complete() -> None:
    model = small_net()
    assert APGDT(model, eps=0.1, seed=3).params() == {
        "eps": 0.1,
        "steps": 100,
        "n_target_classes": 9,
        "restarts": 1,
        "seed": 3,
    }
    assert Square(model, eps=0.1, output=0).params() == {
        "eps": 0.1,
        "output": 0,
        "queries": 5000,
        "p_init": 0.8,
        "rescale_schedule": True,
        "seed": None,
    }
    json.dumps([APGDT(model, eps=0.1).params(), Square(model, eps=0.1).params()])
    assert APGDT.name == "apgd_t" and Square.name == "square"
    assert APGDT.is_adversarial and Square.is_adversarial


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda m: APGDT(m, eps=-0.1), "eps"),
        (lambda m: Square(m, eps=0.1, p_init=0.0), "p_init"),
        (lambda m: Square(m, eps=0.1, p_init=1.5), "p_init"),
        (lambda m: Square(m, eps=0.1, seed=1.5), "seed"),  # type: ignore[arg-type]
    ],
)
def test_bad_settings_raise_input_error(make: Callable[[nn.Module], Attack], match: str) -> None:
    with pytest.raises(InputError, match=match):
        make(small_net())


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda m: APGDT(m, eps=0.1, n_target_classes=0), "n_target_classes"),
        (lambda m: Square(m, eps=0.1, queries=0), "queries"),
    ],
)
def test_bad_counts_raise_argument_error(make: Callable[[nn.Module], Attack], match: str) -> None:
    with pytest.raises(ArgumentError, match=match):
        make(small_net())


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_missing_labels_raise_input_error(name: str) -> None:
    x, _ = batch()
    with pytest.raises(InputError, match="labels"):
        ATTACKS[name](small_net(), 0.1)(x)


# --------------------------------------------------------------------------------------------
# APGD-T
# --------------------------------------------------------------------------------------------


def test_targeted_dlr_loss_by_hand() -> None:
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
    # Row 0: −(4 − 2)/(4 − (2 + 1)/2) = −0.8.  Row 1: −(0 − 4)/(4 − (2 + 1)/2) = 1.6.
    loss = targeted_dlr_loss(logits, torch.tensor([0, 0]), torch.tensor([2, 4]))
    torch.testing.assert_close(loss, torch.tensor([-0.8, 1.6]))
    # Shift- and scale-invariant in the logits.
    torch.testing.assert_close(
        targeted_dlr_loss(3 * logits + 5, torch.tensor([0, 0]), torch.tensor([2, 4])), loss
    )


def test_target_classes_are_the_top_non_true_classes() -> None:
    logits = torch.tensor([[5.0, 1.0, 3.0, 4.0], [1.0, 5.0, 3.0, 4.0]])
    y = torch.tensor([0, 0])  # the second row is a clean mistake: y must still not be a target
    assert target_classes(logits, y, 3).tolist() == [[3, 2, 1], [1, 3, 2]]
    assert target_classes(logits, y, 1).tolist() == [[3], [1]]


def test_apgd_t_needs_four_classes() -> None:
    torch.manual_seed(0)
    three_classes = nn.Linear(4, 3)
    x, y = torch.rand(5, 4), torch.zeros(5, dtype=torch.long)
    with pytest.raises(ConfigError, match="at least 4 classes"):
        APGDT(three_classes, eps=0.1, steps=2)(x, y)
    APGDT(nn.Linear(4, 4), eps=0.1, steps=2)(x, y)  # four is enough


def test_apgd_t_runs_each_target_in_rank_order_and_caps_at_c_minus_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    targets: list[Tensor] = []
    targeting = apgd_targeted._targeting

    def recording(target: Tensor) -> Any:
        targets.append(target)
        return targeting(target)

    monkeypatch.setattr(apgd_targeted, "_targeting", recording)
    model = small_net()
    x, y = batch()
    with torch.no_grad():
        y = model.eval()(x).argmax(1)  # all clean-correct
    # ε so small nobody is fooled: every (target, restart) pair runs on the whole batch.
    APGDT(model, eps=1e-6, steps=2, n_target_classes=9, restarts=2, seed=0)(x, y)
    with torch.no_grad():
        expected = target_classes(model(x), y, 4)  # 5 classes: 4 possible targets, not 9
    assert len(targets) == 8
    for k, target in enumerate(targets):
        assert torch.equal(target, expected[:, k // 2])


def test_apgd_t_attacks_only_samples_not_yet_fooled(
    blobs: tuple[nn.Module, Tensor, Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x, y = blobs
    runs: list[tuple[Tensor, Any]] = []
    single_run = APGDT._single_run

    def recording(self: APGDT, x_run: Tensor, y_run: Tensor, loss_fn: Any = None) -> Any:
        runs.append((x_run, single_run(self, x_run, y_run, loss_fn)))
        return runs[-1][1]

    monkeypatch.setattr(APGDT, "_single_run", recording)
    x_adv = APGDT(model, eps=0.08, steps=10, n_target_classes=3, seed=0)(x, y)
    sizes = [len(x_run) for x_run, _ in runs]
    fooled = [int(run.fooled.sum()) for _, run in runs]
    assert len(runs) == 3 and fooled[0] > 0
    assert sizes[0] == int((model(x).argmax(1) == y).sum())
    assert sizes[1:] == [sizes[k] - fooled[k] for k in range(2)]
    # Every sample some run fooled is returned misclassified (its first misclassified point).
    assert accuracy(model, x_adv, y) == pytest.approx(
        1 - (len(x) - sizes[0] + sum(fooled)) / len(x)
    )


def test_apgd_t_lowers_accuracy_at_least_as_much_as_fgsm(
    blobs: tuple[nn.Module, Tensor, Tensor],
) -> None:
    model, x, y = blobs
    clean = accuracy(model, x, y)
    fgsm = accuracy(model, FGSM(model, eps=0.05)(x, y), y)
    apgd_t = accuracy(model, APGDT(model, eps=0.05, steps=20, seed=0)(x, y), y)
    assert clean > 0.9
    assert apgd_t <= fgsm < clean


# --------------------------------------------------------------------------------------------
# Square
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("iteration", "queries", "expected"),
    [
        (0, 10_000, 0.8),
        (10, 10_000, 0.8),
        (11, 10_000, 0.4),
        (200, 10_000, 0.2),
        (201, 10_000, 0.1),
        (8000, 10_000, 0.8 / 256),
        (8001, 10_000, 0.8 / 512),
        (1, 100, 0.2),  # rescaled to iteration 100 of 10 000
        (99, 100, 0.8 / 512),
    ],
)
def test_p_schedule_matches_the_reference(iteration: int, queries: int, expected: float) -> None:
    assert p_schedule(iteration, queries, 0.8) == pytest.approx(expected)


# AutoAttack's schedule on a 28 × 28 image with p_init 0.8 and n_queries = 5000 updates, side =
# round(√(p·784)): 25 (p 0.8), 18 (0.4), 13 (0.2), 9 (0.1), 6 (0.05), 4 (0.025), 3 (0.0125),
# 2 (0.00625 and 0.003125), 1 (0.0015625). Not rescaled (AutoAttack's standard suite,
# resc_schedule=False), p halves after iterations 10, 50, 200, 500, 1000, 2000, 4000 and stays
# at 2 × 2 after 4000; rescaled (resc_schedule=True) the iteration counts double and the squares
# reach 1 × 1 after iteration 4000.
_AUTOATTACK_SIDES = {
    False: {0: 25, 10: 25, 11: 18, 50: 18, 51: 13, 201: 9, 501: 6, 1001: 4, 2001: 3, 4000: 3,
            4001: 2, 4999: 2},
    True: {0: 25, 5: 25, 6: 18, 25: 18, 26: 13, 101: 9, 251: 6, 501: 4, 1001: 3, 2001: 2,
           3001: 2, 4000: 2, 4001: 1, 4999: 1},
}  # fmt: skip


@pytest.mark.parametrize("rescale", [False, True])
def test_square_schedule_is_autoattacks(rescale: bool) -> None:
    for iteration, side in _AUTOATTACK_SIDES[rescale].items():
        p = p_schedule(iteration, 5000, 0.8, rescale=rescale)
        assert square_side(p, 28, 28) == side, (rescale, iteration)
    # The attack itself: queries = 1 + 5000 updates; its steps change squares of those sides.
    x = torch.full((1, 1, 28, 28), 0.5)
    attack = Square(
        nn.Sequential(nn.Flatten(), nn.Linear(784, 2)), eps=0.1, queries=5001,
        rescale_schedule=rescale, seed=0,
    )  # fmt: skip
    for iteration, side in _AUTOATTACK_SIDES[rescale].items():
        step = attack._square_step(x.clone(), x, iteration)
        changed = (step != x)[0, 0]
        assert changed.any(dim=1).sum() == side and changed.any(dim=0).sum() == side
    assert attack.params()["rescale_schedule"] is rescale


def test_standard_suite_builds_autoattacks_square() -> None:
    from lsakit.suite import suite_attacks

    (square,) = (a for a in suite_attacks("standard") if a.label == "Square")
    params = square.build(nn.Linear(2, 2), 0.3, 0, None).params()
    assert (params["queries"], params["p_init"], params["rescale_schedule"]) == (5001, 0.8, False)


def test_square_side_by_hand() -> None:
    assert square_side(0.8, 32, 32) == 29  # round(√819.2) = round(28.6)
    assert square_side(0.8 / 512, 32, 32) == 1  # round(√1.6) = round(1.26)
    assert square_side(1.0, 3, 5) == 3  # round(√15) = 4, capped at the short side
    assert square_side(0.8, 1, 1) == 1


def test_margin_and_image_views_by_hand() -> None:
    logits = torch.tensor([[2.0, 5.0, 1.0], [2.0, 5.0, 1.0]])
    assert margin(logits, torch.tensor([1, 0])).tolist() == [3.0, -3.0]
    assert as_images(torch.zeros(4, 7)).shape == (4, 7, 1, 1)
    assert as_images(torch.zeros(4, 5, 6)).shape == (4, 1, 5, 6)
    assert as_images(torch.zeros(4, 2, 3, 5, 6)).shape == (4, 6, 5, 6)


class _NoBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        raise AssertionError("the attack asked for a gradient")


class _Opaque(nn.Module):
    """A model whose backward raises, recording grad mode and how many rows each forward sees."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.rows: list[int] = []
        self.grad_enabled: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.rows.append(x.shape[0])
        self.grad_enabled.append(torch.is_grad_enabled())
        out: Tensor = self.inner(_NoBackward.apply(x))  # type: ignore[no-untyped-call]
        return out


def test_square_never_uses_gradients(moons: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = moons
    opaque = _Opaque(model)
    x_adv = Square(opaque, eps=0.1, queries=50, seed=0)(x, y)
    assert not any(opaque.grad_enabled)
    assert accuracy(model, x_adv, y) < accuracy(model, x, y)
    with pytest.raises(AssertionError, match="asked for a gradient"):  # the model is a real trap
        APGDT(_Opaque(nn.Linear(2, 4)), eps=0.1, steps=1)(x, y % 4)


def test_square_stops_querying_fooled_samples(moons: tuple[nn.Module, Tensor, Tensor]) -> None:
    model, x, y = moons
    opaque = _Opaque(model)
    result = Square(opaque, eps=0.1, queries=40, seed=0).search(x, y)
    clean_fooled = model(x).argmax(1) != y
    assert result.fooled.any() and (~result.fooled).any()
    # Every row the model saw is the clean pass or a counted query.
    assert sum(opaque.rows) == len(x) + int(result.queries.sum())
    assert (result.queries[~result.fooled] == 40).all()  # the unfooled used the whole budget
    assert (result.queries[result.fooled & ~clean_fooled] < 40).all()  # the fooled stopped
    assert (result.queries[clean_fooled] == 0).all()
    assert (model(result.adversarial).argmax(1) != y)[result.fooled].all()
    assert torch.equal(result.adversarial[clean_fooled], x[clean_fooled])


def test_square_finds_the_only_fooling_vertex_exactly() -> None:
    # Class 0 wins while x₀ + x₁ < 1.2: from (0.5, 0.5) with ε = 0.2 only the vertex
    # (0.7, 0.7) is misclassified, and each query on a 1 × 1 "image" tries a random vertex.
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-1.0, -1.0], [0.0, 0.0]]))
        model.bias.copy_(torch.tensor([1.2, 0.0]))
    x, y = torch.full((3, 2), 0.5), torch.zeros(3, dtype=torch.long)
    result = Square(model, eps=0.2, queries=50, seed=0).search(x, y)
    assert result.fooled.all()
    assert torch.equal(result.adversarial, x + 0.2)
    assert (result.queries >= 1).all() and (result.queries <= 50).all()


def test_square_step_flips_one_small_square_per_sample() -> None:
    # p = 0.25 on 4 × 4 images: squares of side round(√4) = 2. Every pixel a step changes lies in
    # that sample's square and moves to the other side of x (the +2ε/−2ε flip, then projection).
    x, _ = batch()
    images = as_images(x)
    attack = Square(small_net(), eps=0.1, queries=2, p_init=0.25, seed=0)
    start = attack._stripes(images)
    step = attack._square_step(start, images, iteration=0)
    changed = step != start
    assert changed.any()
    for pixels in changed.any(dim=1):  # (4, 4) per sample: changed in any channel
        assert len(pixels.any(dim=1).nonzero()) <= 2 and len(pixels.any(dim=0).nonzero()) <= 2
    assert ((step - images) * (start - images))[changed].le(0).all()
    assert (step - images).abs().max() <= 0.1 + 1e-6


def test_square_lowers_accuracy_on_trained_models(
    moons: tuple[nn.Module, Tensor, Tensor], blobs: tuple[nn.Module, Tensor, Tensor]
) -> None:
    for model, x, y in (moons, blobs):
        clean = accuracy(model, x, y)
        square = accuracy(model, Square(model, eps=0.1, queries=100, seed=0)(x, y), y)
        assert square < clean - 0.05
