"""Statistical noise (skimage.util.random_noise semantics, per element, clipped to [0, 1])."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from lsakit.errors import InputError
from lsakit.perturb import (
    GaussianNoise,
    PepperNoise,
    Perturbation,
    SaltNoise,
    SaltPepperNoise,
    SpeckleNoise,
    build,
)

NoiseFactory = Callable[[float, int | None], Perturbation]

#: name → factory(strength, seed)
NOISES: dict[str, NoiseFactory] = {
    "gaussian": lambda s, seed: GaussianNoise(std=s, seed=seed),
    "speckle": lambda s, seed: SpeckleNoise(std=s, seed=seed),
    "salt": lambda s, seed: SaltNoise(amount=s, seed=seed),
    "pepper": lambda s, seed: PepperNoise(amount=s, seed=seed),
    "salt_pepper": lambda s, seed: SaltPepperNoise(amount=s, seed=seed),
}

#: Elements in the "large tensor" tests: the binomial / sampling spread is ~1/√N ≈ 0.002.
LARGE = 250_000


def images(seed: int = 0, n: int = 4) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 5, 5, generator=g)


def flat_half(n: int = LARGE) -> Tensor:
    return torch.full((1, n), 0.5)


def five_sigma(p: float, n: int = LARGE) -> float:
    """Five binomial standard deviations of a fraction estimated from n Bernoulli(p) draws."""
    return 5 * math.sqrt(p * (1 - p) / n)


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(NOISES)),
    strength=st.floats(0.0, 1.0),
    seed=st.none() | st.integers(0, 2**31),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_output_is_a_valid_input_like_x(
    name: str, strength: float, seed: int | None, dtype: torch.dtype
) -> None:
    x = images().to(dtype)
    before = x.clone()
    out = NOISES[name](strength, seed)(x)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(x, before)  # not mutated


@pytest.mark.parametrize("name", sorted(NOISES))
def test_zero_strength_returns_x_exactly(name: str) -> None:
    x = images()
    out = NOISES[name](0.0, 0)(x)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("name", sorted(NOISES))
def test_seeded_noise_is_reproducible_across_fresh_objects(name: str) -> None:
    x = images()
    first, second = NOISES[name](0.3, 123), NOISES[name](0.3, 123)
    a1, a2 = first(x), first(x)
    assert not torch.equal(a1, a2)  # the generator is re-used, not re-seeded every call
    assert torch.equal(second(x), a1) and torch.equal(second(x), a2)
    assert not torch.equal(NOISES[name](0.3, 124)(x), a1)


@pytest.mark.parametrize("name", sorted(NOISES))
def test_unseeded_noise_follows_the_global_generator(name: str) -> None:
    x = images()
    torch.manual_seed(5)
    a = NOISES[name](0.3, None)(x)
    torch.manual_seed(5)
    assert torch.equal(NOISES[name](0.3, None)(x), a)


@pytest.mark.parametrize("name", sorted(NOISES))
def test_labels_are_ignored_and_input_grad_is_not_tracked(name: str) -> None:
    x = images().requires_grad_(True)
    out_without = NOISES[name](0.2, 9)(x)
    out_with = NOISES[name](0.2, 9)(x, torch.tensor([0, 1, 2, 3]))
    assert torch.equal(out_without, out_with) and not out_with.requires_grad


@pytest.mark.parametrize("amount", [0.02, 0.1, 0.5])
def test_salt_sets_the_expected_fraction_to_one(amount: float) -> None:
    out = SaltNoise(amount=amount, seed=0)(flat_half())
    salted = out == 1.0
    assert torch.equal(out[~salted], flat_half()[~salted])  # everything else untouched
    assert abs(salted.float().mean().item() - amount) <= five_sigma(amount)


def test_salt_with_amount_one_saturates_everything() -> None:
    assert torch.equal(SaltNoise(amount=1.0, seed=0)(images()), torch.ones(4, 3, 5, 5))


@pytest.mark.parametrize("amount", [0.05, 0.3])
def test_pepper_sets_exact_zeros(amount: float) -> None:
    x = images(n=LARGE // 75).clamp_min(0.01)  # no zeros to start with
    out = PepperNoise(amount=amount, seed=1)(x)
    changed = out != x
    assert (out[changed] == 0).all()
    assert abs(changed.float().mean().item() - amount) <= five_sigma(amount, changed.numel())


@pytest.mark.parametrize("salt_vs_pepper", [0.0, 0.25, 1.0])
def test_salt_pepper_splits_replacements_by_salt_vs_pepper(salt_vs_pepper: float) -> None:
    amount = 0.4
    out = SaltPepperNoise(amount=amount, salt_vs_pepper=salt_vs_pepper, seed=2)(flat_half())
    salt, pepper = (out == 1).float().mean().item(), (out == 0).float().mean().item()
    assert ((out == 0.5) | (out == 0) | (out == 1)).all()
    assert abs(salt + pepper - amount) <= five_sigma(amount)
    assert abs(salt - amount * salt_vs_pepper) <= five_sigma(amount * salt_vs_pepper) + 1e-12


def test_gaussian_has_the_requested_std_before_clamping() -> None:
    # At 0.5 with σ = 0.05 the [0, 1] clamp is 10σ away: the noise is effectively unclipped.
    std = 0.05
    noise = GaussianNoise(std=std, seed=0)(flat_half()) - 0.5
    assert abs(noise.mean().item()) <= 5 * std / math.sqrt(LARGE)
    assert noise.std().item() == pytest.approx(std, rel=0.02)


def test_gaussian_is_clipped_to_the_unit_interval() -> None:
    out = GaussianNoise(std=1.0, seed=0)(flat_half(10_000))
    assert out.min() == 0 and out.max() == 1  # σ = 1 at 0.5 must hit both ends


def test_speckle_scales_with_the_pixel_and_keeps_zeros() -> None:
    std = 0.1
    x = torch.cat([torch.zeros(1, LARGE), torch.full((1, LARGE), 0.5)])
    out = SpeckleNoise(std=std, seed=0)(x)
    assert torch.equal(out[0], x[0])
    relative = (out[1] - 0.5) / 0.5  # x·σ·n / x = σ·n
    assert relative.std().item() == pytest.approx(std, rel=0.02)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: GaussianNoise(std=-0.1), "std"),
        (lambda: SpeckleNoise(std=float("nan")), "std"),
        (lambda: SaltNoise(amount=1.5), "amount"),
        (lambda: PepperNoise(amount=-0.1), "amount"),
        (lambda: SaltPepperNoise(amount=0.1, salt_vs_pepper=2.0), "salt_vs_pepper"),
        (lambda: GaussianNoise(std=0.1, seed="7"), "seed"),  # type: ignore[arg-type]
    ],
)
def test_bad_strengths_raise_input_error(make: Callable[[], Perturbation], match: str) -> None:
    with pytest.raises(InputError, match=match):
        make()


@pytest.mark.parametrize("name", sorted(NOISES))
@pytest.mark.parametrize(
    "x",
    [
        torch.full((2, 3), 1.5),
        torch.full((2, 3), -0.5),
        torch.full((2, 3), float("nan")),
        torch.ones(2, 3, dtype=torch.uint8),
        torch.zeros(0, 3),
        torch.rand(3),
    ],
    ids=["above-one", "negative", "nan", "uint8", "empty", "no-batch-dim"],
)
def test_bad_inputs_raise_input_error(name: str, x: Tensor) -> None:
    with pytest.raises(InputError):
        NOISES[name](0.1, 0)(x)


def test_params_are_json_and_the_registry_builds_the_same_noise() -> None:
    noise = SaltPepperNoise(amount=0.2, salt_vs_pepper=0.3, seed=4)
    assert json.loads(json.dumps(noise.params())) == {
        "amount": 0.2,
        "salt_vs_pepper": 0.3,
        "seed": 4,
    }
    assert not noise.is_adversarial and noise.name == "salt_pepper"
    built = build("salt_pepper", strength=0.2, salt_vs_pepper=0.3, seed=4)
    assert torch.equal(built(images()), noise(images()))
