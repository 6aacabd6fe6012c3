"""Tests for lsakit.models: the paper's networks (Table 1), their registry and Normalize."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lsakit import models
from lsakit.errors import ConfigError, InputError, LsakitError
from lsakit.models import Normalize

ACTIVATION_TYPES = (nn.ReLU, nn.ELU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid)

# Small but structurally complete configurations: every model type, WRN with one and two blocks
# per stage (depth 10 and 16), so the tests stay fast on 2 CPU cores.
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "model_a": ("model_a", {}),
    "model_b": ("model_b", {}),
    "vgg19": ("vgg19", {}),
    "wrn-10-1": ("wrn", {"depth": 10, "widen_factor": 1}),
    "wrn-16-2": ("wrn", {"depth": 16, "widen_factor": 2}),
    "preact_resnet18": ("preact_resnet18", {}),
}

# Activation modules each configuration must have: paper L0..L{k-1} for A and B, 16 for VGG-19,
# 2 per basic block + 1 final for the residual networks (WRN: depth − 3).
EXPECTED_ACTIVATIONS = {
    "model_a": 3,
    "model_b": 4,
    "vgg19": 16,
    "wrn-10-1": 7,
    "wrn-16-2": 13,
    "preact_resnet18": 17,
}

CIFAR_CONFIGS = ["vgg19", "wrn-10-1", "preact_resnet18"]


@functools.cache
def _built(config: str) -> nn.Module:
    torch.manual_seed(0)
    name, kwargs = CONFIGS[config]
    return models.build(name, **kwargs)


def _inputs(config: str, batch: int = 2) -> torch.Tensor:
    shape = models.info(CONFIGS[config][0]).input_shape
    return torch.rand(batch, *shape, generator=torch.Generator().manual_seed(1))


def _activations(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, ACTIVATION_TYPES)]


def _meta_model(name: str, **kwargs: Any) -> nn.Module:
    """Build on the meta device: shapes and parameter counts without memory or init time."""
    with torch.device("meta"):
        return models.build(name, **kwargs)


# ------------------------------------------------------------------------------ forward & shape


@pytest.mark.parametrize("config", list(CONFIGS))
def test_output_is_batch_of_logits(config: str) -> None:
    model = _built(config).eval()
    num_classes = models.info(CONFIGS[config][0]).num_classes
    with torch.no_grad():
        out = model(_inputs(config))
    assert out.shape == (2, num_classes)
    assert out.dtype == torch.float32
    assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize("config", list(CONFIGS))
def test_num_classes_sets_the_logit_count(config: str) -> None:
    # On the meta device the forward pass computes shapes only, so this stays cheap.
    name, kwargs = CONFIGS[config]
    model = _meta_model(name, **{**kwargs, "num_classes": 7})
    assert model(_inputs(config).to("meta")).shape == (2, 7)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_forward_leaves_inputs_unmutated(config: str) -> None:
    model = _built(config).train()  # training mode: BatchNorm's batch-statistics path
    x = _inputs(config)
    original = x.clone()
    model(x)
    assert torch.equal(x, original)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_input_gradient_flows(config: str) -> None:
    # Attacks differentiate the loss with respect to the input pixels.
    model = _built(config).eval()
    x = _inputs(config).requires_grad_(True)
    model(x).sum().backward()
    assert x.grad is not None
    assert float(x.grad.abs().sum()) > 0


# -------------------------------------------------------------------------------- activations


@pytest.mark.parametrize("config", list(CONFIGS))
def test_activation_module_count(config: str) -> None:
    assert len(_activations(_built(config))) == EXPECTED_ACTIVATIONS[config]


@pytest.mark.parametrize(
    ("depth", "widen_factor", "expected"), [(28, 10, 25), (34, 10, 31), (40, 2, 37)]
)
def test_wrn_activation_count_is_depth_minus_3(
    depth: int, widen_factor: int, expected: int
) -> None:
    model = _meta_model("wrn", depth=depth, widen_factor=widen_factor)
    assert len(_activations(model)) == expected == depth - 3


@pytest.mark.parametrize("config", list(CONFIGS))
def test_activations_are_distinct_non_inplace_modules(config: str) -> None:
    model = _built(config)
    registered = Counter(
        id(m)
        for _, m in model.named_modules(remove_duplicate=False)
        if isinstance(m, ACTIVATION_TYPES)
    )
    assert registered, "model has no activation modules"
    assert max(registered.values()) == 1, "an activation instance is registered twice"
    assert all(getattr(m, "inplace", False) is False for m in _activations(model))


@pytest.mark.parametrize("config", list(CONFIGS))
def test_each_activation_runs_exactly_once_per_forward(config: str) -> None:
    model = _built(config).eval()
    calls: Counter[int] = Counter()
    handles = [
        m.register_forward_hook(lambda module, _in, _out: calls.update([id(module)]))
        for m in _activations(model)
    ]
    try:
        with torch.no_grad():
            model(_inputs(config))
    finally:
        for handle in handles:
            handle.remove()
    assert {id(m) for m in _activations(model)} == set(calls)
    assert set(calls.values()) == {1}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_no_functional_activation_outside_modules(
    config: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # nn.ReLU / nn.ELU call F.relu / F.elu; any extra call comes from a hidden F.relu in forward,
    # which a forward hook could not see.
    model = _built(config).eval()
    functional_calls: Counter[str] = Counter()

    def counting(name: str, original: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def wrapper(*args: Any, **kwargs: Any) -> torch.Tensor:
            functional_calls[name] += 1
            return original(*args, **kwargs)

        return wrapper

    for name in ("relu", "elu", "gelu", "silu", "leaky_relu"):
        monkeypatch.setattr(F, name, counting(name, getattr(F, name)))
    with torch.no_grad():
        model(_inputs(config))
    assert sum(functional_calls.values()) == EXPECTED_ACTIVATIONS[config]


def test_model_a_uses_elu_and_model_b_relu() -> None:
    assert {type(m) for m in _activations(_built("model_a"))} == {nn.ELU}
    assert {type(m) for m in _activations(_built("model_b"))} == {nn.ReLU}


# ---------------------------------------------------------------------------------- parameters


def test_model_a_parameter_count() -> None:
    first = 2 * 100 + 100
    hidden = 2 * (100 * 100 + 100)
    last = 100 * 2 + 2
    assert first + hidden + last == 20702
    assert models.count_parameters(_built("model_a")) == 20702


def test_model_a_with_one_output_is_binary_cross_entropy_exactly() -> None:
    """outputs=1: Linear(100, 1) then the logits [0, z]; CE on them is BCE with sigmoid(z)."""
    torch.manual_seed(0)
    model = models.build("model_a", outputs=1).double()
    assert isinstance(model.fc4, nn.Linear) and model.fc4.out_features == 1
    assert models.count_parameters(model) == 20702 - 101
    assert {type(m) for m in _activations(model)} == {nn.ELU}  # the head is no activation
    x = torch.randn(64, 2, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 2, (64,))
    logits = model(x)
    assert logits.shape == (64, 2) and bool((logits[:, 0] == 0).all())
    z = model[:-1](x).squeeze(1)
    ce = F.cross_entropy(logits, y)
    bce = F.binary_cross_entropy_with_logits(z, y.double())
    torch.testing.assert_close(ce, bce, rtol=1e-12, atol=1e-12)
    (grad_ce,) = torch.autograd.grad(ce, x, retain_graph=True)
    (grad_bce,) = torch.autograd.grad(bce, x)
    torch.testing.assert_close(grad_ce, grad_bce, rtol=1e-10, atol=1e-14)
    assert torch.equal(logits.argmax(1), (z > 0).long())  # predicts class 1 iff z > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"outputs": 1, "num_classes": 3}, "needs num_classes=2"),
        ({"outputs": 3}, "1 or num_classes"),
    ],
)
def test_model_a_outputs_is_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        models.build("model_a", **kwargs)


def test_model_b_parameter_count() -> None:
    conv1 = 16 * 1 * 25 + 16
    conv2 = 32 * 16 * 25 + 32
    conv3 = 64 * 32 * 25 + 64
    fc1 = 576 * 100 + 100
    fc2 = 100 * 10 + 10
    assert (conv1, conv2, conv3, fc1, fc2) == (416, 12832, 51264, 57700, 1010)
    assert models.count_parameters(_built("model_b")) == 123222 == conv1 + conv2 + conv3 + fc1 + fc2


def test_vgg19_parameter_count() -> None:
    widths = [64, 64, 128, 128, 256, 256, 256, 256] + [512] * 8
    convs = sum(c_in * c_out * 9 + c_out for c_in, c_out in zip([3, *widths], widths, strict=False))
    batch_norms = sum(2 * c for c in widths)
    classifier = 512 * 10 + 10
    assert models.count_parameters(_built("vgg19")) == convs + batch_norms + classifier == 20040522


def test_wrn_28_10_parameter_count_matches_reference() -> None:
    # 36,479,194 is the TRADES / RobustBench WRN-28-10 (checked against it key for key).
    assert models.count_parameters(_meta_model("wrn")) == 36_479_194


def test_preact_resnet18_parameter_count_matches_reference() -> None:
    assert models.count_parameters(_meta_model("preact_resnet18")) == 11_172_170


def test_count_parameters_counts_shared_once_and_filters_trainable() -> None:
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(3, 2))
    assert models.count_parameters(model) == 12 + 8
    model.get_parameter("3.weight").requires_grad_(False)
    assert models.count_parameters(model, trainable_only=True) == 12 + 2


def test_wrn_follows_reference_initialization() -> None:
    model = models.build("wrn", depth=10, widen_factor=4)
    # A 3×3 conv with 128 output channels: std √(2 / (9·128)).
    weight = model.get_parameter("block2.layer.0.conv1.weight").detach()
    expected_std = math.sqrt(2.0 / (9 * 128))
    assert float(weight.std()) == pytest.approx(expected_std, rel=0.05)
    assert float(weight.mean()) == pytest.approx(0.0, abs=expected_std / 20)
    assert torch.equal(model.get_parameter("fc.bias"), torch.zeros(10))
    assert torch.equal(model.get_parameter("bn1.weight"), torch.ones(256))


def test_wrn_dropout_is_a_module_active_only_in_training() -> None:
    torch.manual_seed(0)
    model = models.build("wrn", depth=10, widen_factor=1, dropout=0.5)
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 3
    assert not any(isinstance(m, nn.Dropout) for m in _built("wrn-10-1").modules())
    x = _inputs("wrn-10-1")
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


# ---------------------------------------------------------------------------------- Normalize


@pytest.mark.parametrize("config", CIFAR_CONFIGS)
def test_cifar_models_normalize_inside_with_buffers(config: str) -> None:
    model = _built(config)
    normalizers = [m for m in model.modules() if isinstance(m, Normalize)]
    assert len(normalizers) == 1
    assert model.get_submodule("normalize") is normalizers[0]
    buffers = dict(model.named_buffers())
    assert torch.equal(buffers["normalize.mean"], torch.tensor(models.CIFAR10_MEAN))
    assert torch.equal(buffers["normalize.std"], torch.tensor(models.CIFAR10_STD))
    assert not any(name.startswith("normalize.") for name, _ in model.named_parameters())
    assert "normalize.mean" in model.state_dict()


@pytest.mark.parametrize("config", ["model_a", "model_b"])
def test_paper_models_a_and_b_have_no_normalization(config: str) -> None:
    assert not any(isinstance(m, Normalize) for m in _built(config).modules())


def test_normalize_exact_values() -> None:
    normalize = Normalize(mean=(0.5, 0.25), std=(0.25, 0.5))
    x = torch.tensor([[[[0.75]], [[1.0]]]])  # (1, 2, 1, 1)
    assert torch.equal(normalize(x), torch.tensor([[[[1.0]], [[1.5]]]]))
    # Channel-last dimensions of any count broadcast: (N, C) and (N, C, L).
    assert torch.equal(normalize(torch.tensor([[0.5, 0.25]])), torch.zeros(1, 2))
    assert normalize(torch.zeros(3, 2, 5)).shape == (3, 2, 5)


@settings(max_examples=50, deadline=None)
@given(
    mean=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=4),
    std_scale=st.floats(0.05, 2.0),
    seed=st.integers(0, 2**16),
)
def test_normalize_is_inverted_by_scale_and_shift(
    mean: list[float], std_scale: float, seed: int
) -> None:
    channels = len(mean)
    std = [std_scale * (1 + i) for i in range(channels)]
    x = torch.rand(2, channels, 3, 3, generator=torch.Generator().manual_seed(seed))
    y = Normalize(mean, std)(x)
    shape = (1, channels, 1, 1)
    restored = y * torch.tensor(std).view(shape) + torch.tensor(mean).view(shape)
    torch.testing.assert_close(restored, x)


def test_normalize_follows_dtype_and_rejects_bad_constants_and_shapes() -> None:
    assert Normalize((0.5,), (0.5,)).half().mean.dtype == torch.float16
    with pytest.raises(ConfigError, match="std"):
        Normalize((0.5,), (0.0,))
    with pytest.raises(ConfigError, match="one mean and one std per channel"):
        Normalize((0.5, 0.5), (0.5,))
    with pytest.raises(InputError, match=r"\(N, 3, \.\.\.\)"):
        Normalize(models.CIFAR10_MEAN, models.CIFAR10_STD)(torch.rand(2, 1, 4, 4))


# ------------------------------------------------------------------------------------ registry


def test_names_lists_the_paper_models_first() -> None:
    assert models.names() == [
        "model_a", "model_b", "vgg19", "wrn", "preact_resnet18", "genotype_net"
    ]  # fmt: skip


def test_info_describes_defaults() -> None:
    info = models.info("wrn")
    assert info.name == "wrn"
    assert info.input_shape == (3, 32, 32)
    assert info.num_classes == 10
    assert info.default_kwargs == {
        "depth": 28,
        "widen_factor": 10,
        "dropout": 0.0,
        "num_classes": 10,
    }
    assert models.info("model_a").default_kwargs == {
        "in_features": 2,
        "hidden": 100,
        "num_classes": 2,
        "outputs": None,
    }
    assert models.info("model_b").input_shape == (1, 28, 28)
    assert all(models.info(name).description for name in models.names())


def test_info_is_frozen_and_its_defaults_a_copy() -> None:
    info = models.info("model_a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.name = "other"  # type: ignore[misc]
    info.default_kwargs["hidden"] = 3
    assert models.info("model_a").default_kwargs["hidden"] == 100


def test_build_applies_kwargs() -> None:
    model = models.build("model_a", in_features=5, hidden=7, num_classes=3)
    assert model(torch.rand(4, 5)).shape == (4, 3)
    assert models.count_parameters(model) == (5 * 7 + 7) + 2 * (7 * 7 + 7) + (7 * 3 + 3)


def test_resolve_kwargs_fills_defaults() -> None:
    assert models.resolve_kwargs("wrn", {"depth": 16}) == {
        "depth": 16,
        "widen_factor": 10,
        "dropout": 0.0,
        "num_classes": 10,
    }


def _one_line_error(error: LsakitError) -> str:
    message = str(error)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("name", "suggestion"), [("vgg16", "vgg19"), ("VGG19", "vgg19"), ("wrm", "wrn")]
)
def test_unknown_model_suggests_closest_and_lists_known(name: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as caught:
        models.build(name)
    message = _one_line_error(caught.value)
    assert f"unknown model {name!r}" in message
    assert f"did you mean {suggestion!r}" in message
    assert all(known in message for known in models.names())
    with pytest.raises(ConfigError):
        models.info(name)


def test_unknown_model_without_close_match_and_non_string_name() -> None:
    with pytest.raises(ConfigError) as caught:
        models.build("transformer")
    assert "did you mean" not in _one_line_error(caught.value)
    with pytest.raises(ConfigError, match="must be a string"):
        models.build(3)  # type: ignore[arg-type]


def test_unknown_kwarg_names_it_and_the_accepted_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        models.build("wrn", widen=4)
    message = _one_line_error(caught.value)
    assert "'widen'" in message
    assert "did you mean 'widen_factor'" in message
    assert "depth, widen_factor, dropout, num_classes" in message


@pytest.mark.parametrize("depth", [4, 27, 29, 0, -2, 16.0, True])
def test_bad_wrn_depth(depth: Any) -> None:
    with pytest.raises(ConfigError, match="depth") as caught:
        models.build("wrn", depth=depth, widen_factor=1)
    _one_line_error(caught.value)


@pytest.mark.parametrize(
    ("name", "kwargs", "argument"),
    [
        ("model_a", {"num_classes": 0}, "num_classes"),
        ("model_a", {"hidden": True}, "hidden"),
        ("model_b", {"num_classes": "10"}, "num_classes"),
        ("wrn", {"depth": 10, "widen_factor": 0}, "widen_factor"),
        ("wrn", {"depth": 10, "widen_factor": 1, "dropout": 1.0}, "dropout"),
        ("wrn", {"depth": 10, "widen_factor": 1, "dropout": -0.1}, "dropout"),
        ("vgg19", {"num_classes": 2.5}, "num_classes"),
        ("preact_resnet18", {"num_classes": None}, "num_classes"),
    ],
)
def test_bad_kwarg_values(name: str, kwargs: dict[str, Any], argument: str) -> None:
    with pytest.raises(ConfigError, match=argument):
        models.build(name, **kwargs)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_every_attack_runs_on_model_a_with_one_output() -> None:
    """The single-logit head needs nothing of the attacks: they see the two logits [0, z]
    (APGD-T is left out: its targeted DLR loss needs ≥ 4 classes, for any binary model)."""
    from lsakit import perturb
    from lsakit.domain import input_domain

    torch.manual_seed(0)
    model = models.build("model_a", outputs=1).eval()
    x, y = torch.randn(16, 2), torch.randint(0, 2, (16,))
    attacks = [
        perturb.FGSM(model, eps=0.3),
        perturb.PGD(model, eps=0.3, steps=3),
        perturb.MIFGSM(model, eps=0.3, steps=3),
        perturb.CWLinf(model, eps=0.3, steps=3),
        perturb.APGD(model, eps=0.3, steps=3),
        perturb.FABT(model, eps=0.3, steps=3, n_target_classes=1),
        perturb.Square(model, eps=0.3, queries=10),
        perturb.EOTPGD(model, eps=0.3, steps=2, samples=2),
    ]
    with input_domain(None):
        for attack in attacks:
            x_adv = attack(x, y)
            assert x_adv.shape == x.shape and bool(torch.isfinite(x_adv).all()), attack.name
            assert float((x_adv - x).abs().max()) <= 0.3 + 1e-5, attack.name
