"""The declared input domain: one declaration that validation, attacks, noises and results follow."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lsakit import analyze, data, relative_errors
from lsakit.domain import (
    UNBOUNDED,
    UNIT,
    InputDomain,
    as_domain,
    attach_domain,
    current_domain,
    input_domain,
)
from lsakit.errors import ConfigError, InputError
from lsakit.evaluate import fgsm_sweep
from lsakit.perturb import (
    APGD,
    FGSM,
    PGD,
    GaussianNoise,
    PepperNoise,
    SaltNoise,
    SaltPepperNoise,
    projection_linf,
)
from lsakit.suite import run_suite


def _tabular_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))


def _z_scores(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = 2.5 * torch.randn(n, 3, generator=g)  # well outside [0, 1]
    return x, (x[:, 0] > 0).long()


def test_default_is_unit_and_blocks_nest_and_restore() -> None:
    assert current_domain() == UNIT
    with input_domain(None) as outer:
        assert outer == UNBOUNDED and current_domain() == UNBOUNDED
        with input_domain((-1.0, 2.0)):
            assert current_domain().describe() == "[-1, 2]"
        assert current_domain() == UNBOUNDED
    assert current_domain() == UNIT
    with pytest.raises(RuntimeError), input_domain("unbounded"):
        raise RuntimeError("boom")
    assert current_domain() == UNIT  # restored after an error too


def test_as_domain_forms_and_json_round_trip() -> None:
    assert as_domain("unit") == UNIT and as_domain("0,1") == UNIT
    assert as_domain("none") == UNBOUNDED and as_domain(None) == UNBOUNDED
    assert as_domain("-1,1") == as_domain((-1, 1))
    half = as_domain((0.0, None))  # bounded below only
    assert half.describe() == "[0, inf]" and not half.bounded and not half.unbounded
    per = as_domain((torch.tensor([0.0, -1.0, -math.inf]), torch.tensor([1.0, 1.0, math.inf])))
    assert InputDomain.from_json(per.to_json()) == per
    assert per.to_json() == {"low": [0.0, -1.0, None], "high": [1.0, 1.0, None]}
    assert InputDomain.from_json(UNBOUNDED.to_json()) == UNBOUNDED
    for bad in ("sideways", (1.0, 0.0), (1, 2, 3), {"low": 0}, (float("nan"), 1.0)):
        with pytest.raises(ConfigError):
            as_domain(bad)


def test_validation_names_the_declared_bounds() -> None:
    model = _tabular_model()
    x, _ = _z_scores()
    with pytest.raises(InputError, match=r"outside \[0, 1\] \(the declared input domain\)"):
        relative_errors(model, x, x + 0.1)
    with input_domain(None):
        values = relative_errors(model, x, x + 0.1)  # now accepted
    assert len(values) == 1 and values[0] > 0
    with input_domain((-1.0, 1.0)), pytest.raises(InputError, match=r"outside \[-1, 1\]"):
        relative_errors(model, x, x)


def test_unbounded_fgsm_is_the_unclipped_step() -> None:
    model = _tabular_model()
    x, y = _z_scores()
    attack = FGSM(model, eps=0.3)
    with input_domain(None):
        x_adv = attack(x, y)
        direction = attack.direction(x, y)
    torch.testing.assert_close(x_adv, x + 0.3 * direction, rtol=0, atol=0)
    assert float((x_adv - x).abs().max()) == pytest.approx(0.3)


def test_per_feature_box_clips_each_feature() -> None:
    model = _tabular_model()
    x, y = _z_scores()
    low = torch.tensor([-10.0, -0.5, -math.inf])
    high = torch.tensor([10.0, 0.5, math.inf])
    x = torch.maximum(torch.minimum(x, high), low)  # the clean batch lies in the box
    with input_domain((low, high)):
        x_adv = PGD(model, eps=2.0, steps=5, seed=0)(x, y)
        noisy = GaussianNoise(std=5.0, seed=0)(x)
    for out in (x_adv, noisy):
        assert float(out[:, 1].abs().max()) <= 0.5
    assert float((x_adv - x).abs().max()) <= 2.0 + 1e-6
    assert float(noisy[:, 2].abs().max()) > 0.5  # the unbounded feature is not clipped


def test_salt_and_pepper_write_the_domains_faces() -> None:
    x = torch.zeros(4, 50)
    with input_domain((-2.0, 3.0)):
        salted = SaltNoise(amount=1.0, seed=0)(x)
        peppered = PepperNoise(amount=1.0, seed=0)(x)
        mixed = SaltPepperNoise(amount=1.0, seed=0)(x)
    assert salted.unique().tolist() == [3.0] and peppered.unique().tolist() == [-2.0]
    assert set(mixed.unique().tolist()) == {-2.0, 3.0}
    per = (torch.tensor([-1.0] * 25 + [0.0] * 25), torch.tensor([1.0] * 25 + [2.0] * 25))
    with input_domain(per):
        salted = SaltNoise(amount=1.0, seed=0)(x)
    assert salted[:, :25].unique().tolist() == [1.0] and salted[:, 25:].unique().tolist() == [2.0]
    with input_domain(None), pytest.raises(ConfigError, match="needs a bounded input domain"):
        SaltNoise(amount=0.1)(x)


def test_fab_projection_in_an_unbounded_box_is_the_closed_form() -> None:
    g = torch.Generator().manual_seed(0)
    points, w = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    b = torch.randn(6, generator=g)
    inf = torch.tensor(math.inf)
    steps = projection_linf(points, w, b, -inf, inf)
    # Unconstrained: δ = −(w·t − b)/‖w‖₁ · sign(w), the minimal L∞ step onto the plane.
    residual = (w * points).sum(dim=1) - b
    expected = -(residual / w.abs().sum(dim=1))[:, None] * w.sign()
    torch.testing.assert_close(steps, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close((w * (points + steps)).sum(dim=1), b, rtol=1e-5, atol=1e-5)


def test_analyze_records_the_domain_a_loader_carries() -> None:
    model = _tabular_model()
    x, y = _z_scores()
    loader = attach_domain(DataLoader(TensorDataset(x, y), batch_size=8), None)
    with pytest.raises(ConfigError, match="cannot carry an input domain"):
        attach_domain([(x, y)], None)
    result = analyze(model, loader, {"fgsm": FGSM(model, eps=0.2)})
    assert result.input_domain == UNBOUNDED.to_json()
    assert current_domain() == UNIT  # the declaration ended with the call
    with pytest.raises(InputError, match="outside"):
        analyze(model, [(x, y)], {"fgsm": FGSM(model, eps=0.2)})
    sweep = fgsm_sweep(model, loader, [0.0, 0.5])
    assert sweep[0.0] >= sweep[0.5]


def test_registry_loaders_carry_their_domain() -> None:
    assert data.domain("mnist") == UNIT and data.domain("moons") == UNIT
    assert data.domain("moons", coordinates="standardized") == UNBOUNDED
    loader = data.load("moons", "test", coordinates="standardized", batch_size=500)
    x, _ = next(iter(loader))
    assert float(x.min()) < 0  # z-scores
    train_x, _ = data.load_tensors("moons", "train", coordinates="standardized")
    torch.testing.assert_close(train_x.mean(0), torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(train_x.std(0, unbiased=False), torch.ones(2), atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="coordinates must be one of"):
        data.domain("moons", coordinates="polar")


def test_the_suite_checks_membership_in_the_declared_domain() -> None:
    model = _tabular_model()
    x, y = _z_scores(8)
    with input_domain(None):
        result = run_suite(model, x, y, eps=0.5, suite="standard", batch_size=8, seed=0)
        apgd = APGD(model, eps=0.5, steps=10, seed=0)(x, y)
    assert 0.0 <= result.robust_accuracy <= 1.0
    assert float((apgd - x).abs().max()) <= 0.5 + 1e-6


def test_training_follows_the_data_sets_domain() -> None:
    from lsakit.config import TrainConfig
    from lsakit.train import train

    config = TrainConfig(
        model="model_a", dataset="moons", method="pgd", eps=0.5, steps=3, epochs=1,
        batch_size=64, data_options={"n_samples": 300, "coordinates": "standardized"},
    )  # fmt: skip
    result = train(config, None)  # z-scores are refused in [0, 1]; here they are declared
    assert 0.0 <= result.metrics[-1]["test_accuracy"] <= 1.0
    assert current_domain() == UNIT
    x, y = data.load_tensors("moons", "test", coordinates="standardized", n_samples=300)
    with pytest.raises(InputError, match="outside"):  # outside train(), nothing is declared
        PGD(result.model, eps=0.5, steps=3, seed=0)(x, y)
