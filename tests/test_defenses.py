"""Tests for lsakit.defenses: PNI noise layers, lasso penalties, pruning masks, checkpoints."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any, ClassVar

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from helpers import tiny_cnn, tiny_mlp
from lsakit import models
from lsakit.checkpoint import METADATA_KEY, load_checkpoint, read_meta, save_checkpoint
from lsakit.defenses import (
    DEFAULT_ALPHA_INIT,
    MASK_BUFFER,
    NoiseInjection,
    NoisyConv2d,
    NoisyLinear,
    SparsityRegularizer,
    add_noise_injection,
    apply_masks,
    enforce_masks,
    enforce_masks_after_steps,
    group_lasso_penalty,
    lasso_penalty,
    magnitude_masks,
    model_transforms,
    noise_disabled,
    noise_parameters,
    parameter_groups,
    pni_ensemble_loss,
    sparsity_report,
)
from lsakit.defenses.sparsity import pruned_count
from lsakit.errors import CheckpointError, ConfigError, InputError
from lsakit.perturb import PGD, Attack
from lsakit.perturb.base import clamp_unit

SMALL_A = {"hidden": 8}


def _one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert "\n" not in message, "error messages are one line"
    return message


def _noisy_linear(seed: int = 0) -> NoisyLinear:
    torch.manual_seed(seed)
    return NoisyLinear(3, 2)


# ------------------------------------------------------------------------------- noise layers


def test_alpha_is_channelwise_and_starts_at_a_quarter() -> None:
    conv, linear = NoisyConv2d(2, 5, 3, padding=1), NoisyLinear(4, 3)
    assert conv.alpha.shape == (5, 1, 1, 1) and linear.alpha.shape == (3, 1)
    assert torch.equal(conv.alpha, torch.full((5, 1, 1, 1), 0.25))
    assert DEFAULT_ALPHA_INIT == 0.25
    assert torch.equal(NoisyLinear(4, 3, alpha_init=0.5).alpha, torch.full((3, 1), 0.5))
    with pytest.raises(ConfigError, match="alpha_init"):
        NoisyLinear(4, 3, alpha_init=-0.1)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_noise_is_resampled_every_forward_in_train_and_eval(mode: str) -> None:
    layer = NoisyConv2d(1, 3, 3)
    layer.train(mode == "train")
    x = torch.rand(2, 1, 5, 5)
    assert not torch.equal(layer(x), layer(x))


def test_noise_disabled_gives_the_plain_layer_and_restores_flags() -> None:
    model = nn.Sequential(NoisyLinear(3, 4), nn.ReLU(), NoisyLinear(4, 2))
    plain = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "alpha" not in k})
    model[2].noise_enabled = False  # a layer already off stays off afterwards
    x = torch.rand(5, 3)
    with noise_disabled(model):
        first, second = model(x), model(x)
    assert torch.equal(first, second) and torch.equal(first, plain(x))
    assert [model[0].noise_enabled, model[2].noise_enabled] == [True, False]
    with pytest.raises(RuntimeError, match="boom"), noise_disabled(model):
        raise RuntimeError("boom")
    assert model[0].noise_enabled
    assert not torch.equal(model(x), model(x))


def test_alpha_gradient_is_the_hand_computed_sum_and_sigma_is_detached() -> None:
    # L = Σ c ⊙ (x W̃ᵀ + b)  ⇒  ∂L/∂W̃ = cᵀx,  ∂L/∂α_i = Σ_j (cᵀx)_ij η_ij,  ∂L/∂W = ∂L/∂W̃.
    layer = _noisy_linear()
    with torch.no_grad():
        layer.alpha.copy_(torch.tensor([[0.5], [2.0]]))
    x = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]])
    c = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
    torch.manual_seed(7)
    (layer(x) * c).sum().backward()
    torch.manual_seed(7)
    eta = torch.randn(2, 3) * layer.weight.detach().std()
    d_w_tilde = c.T @ x
    assert layer.alpha.grad is not None and layer.weight.grad is not None
    assert torch.allclose(layer.alpha.grad, (d_w_tilde * eta).sum(dim=1, keepdim=True))
    assert torch.allclose(layer.weight.grad, d_w_tilde)  # no path through σ_w
    # and the forward really used w + α ⊙ η
    torch.manual_seed(7)
    expected = x @ (layer.weight + layer.alpha * eta).T + layer.bias
    assert torch.allclose(layer(x), expected)


def test_conv_alpha_gradient_matches_the_functional_form() -> None:
    torch.manual_seed(1)
    conv = NoisyConv2d(2, 3, 3)
    x = torch.rand(2, 2, 5, 5)
    torch.manual_seed(3)
    conv(x).pow(2).sum().backward()
    torch.manual_seed(3)
    eta = torch.randn(conv.weight.shape) * conv.weight.detach().std()
    alpha = conv.alpha.detach().clone().requires_grad_(True)
    F.conv2d(x, conv.weight.detach() + alpha * eta, conv.bias).pow(2).sum().backward()
    assert conv.alpha.grad is not None and alpha.grad is not None
    assert conv.alpha.grad.shape == (3, 1, 1, 1)
    assert torch.allclose(conv.alpha.grad, alpha.grad, rtol=1e-5, atol=1e-6)


def test_single_weight_layer_gets_no_noise_instead_of_nan() -> None:
    layer = NoisyLinear(1, 1)
    x = torch.ones(2, 1)
    assert torch.isfinite(layer(x)).all() and torch.equal(layer(x), layer(x))


def test_add_noise_injection_keeps_names_order_keys_and_clean_outputs() -> None:
    model = models.build("model_b")
    reference = copy.deepcopy(model).eval()
    names = [n for n, _ in model.named_modules()]
    keys = list(model.state_dict())
    conv1 = model.conv1
    assert add_noise_injection(model) is model
    assert [n for n, _ in model.named_modules()] == names
    assert model.conv1 is conv1 and isinstance(conv1, NoisyConv2d)
    assert isinstance(model.fc2, NoisyLinear)
    alpha_keys = ["conv1.alpha", "conv2.alpha", "conv3.alpha", "fc1.alpha", "fc2.alpha"]
    assert sorted(set(model.state_dict()) - set(keys)) == alpha_keys
    assert set(keys) <= set(model.state_dict())
    model.eval()
    x = torch.rand(2, 1, 28, 28)
    with noise_disabled(model):
        assert torch.equal(model(x), reference(x))
    assert not torch.equal(model(x), reference(x))  # noise is on by default, in eval too
    add_noise_injection(model)  # idempotent
    assert sorted(set(model.state_dict()) - set(keys)) == alpha_keys


def test_add_noise_injection_layers_and_errors() -> None:
    model = tiny_mlp()
    add_noise_injection(model, layers=["2"], alpha_init=0.1)
    assert [type(m).__name__ for m in model if isinstance(m, nn.Linear)] == [
        "Linear",
        "NoisyLinear",
        "Linear",
    ]
    assert torch.equal(model[2].alpha, torch.full((8, 1), 0.1))
    with pytest.raises(ConfigError, match="unknown layer 'nope'"):
        add_noise_injection(tiny_mlp(), layers=["nope"])
    with pytest.raises(ConfigError, match="is a ELU"):
        add_noise_injection(tiny_mlp(), layers=["1"])
    with pytest.raises(ConfigError, match=r"no nn\.Conv2d or nn\.Linear"):
        add_noise_injection(nn.Sequential(nn.ReLU()))
    with pytest.raises(ConfigError, match="alpha_init"):
        add_noise_injection(tiny_mlp(), alpha_init=float("nan"))


def test_parameter_groups_exempt_alpha_bias_and_norm() -> None:
    model = add_noise_injection(tiny_cnn())
    groups = parameter_groups(model, 5e-4)
    decay, no_decay = groups
    assert (decay["name"], decay["weight_decay"]) == ("decay", 5e-4)
    assert (no_decay["name"], no_decay["weight_decay"]) == ("no_decay", 0.0)
    ids = {id(p) for p in no_decay["params"]}
    assert all(id(a) in ids for a in noise_parameters(model)) and len(noise_parameters(model)) == 4
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert {id(w) for w in decay["params"]} == {id(w) for w in weights}
    assert id(model[1].weight) in ids and id(model[0].bias) in ids
    every = [p for g in groups for p in g["params"]]
    assert len(every) == len({id(p) for p in every}) == len(list(model.parameters()))
    torch.optim.SGD(groups, lr=0.1, momentum=0.9)  # accepted as is
    # PNI's own recipe: only α exempt
    _, alpha_only = parameter_groups(model, 1e-4, exclude_bias_and_norm=False)
    assert {id(p) for p in alpha_only["params"]} == {id(a) for a in noise_parameters(model)}
    with pytest.raises(ConfigError, match="weight_decay"):
        parameter_groups(model, -1.0)


# ------------------------------------------------------------------------------------- lasso


def _hand_model() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, -4.0], [0.0, 0.0]]))
        model[0].bias.fill_(100.0)
        model[1].weight.fill_(50.0)
        model[2].weight.copy_(torch.tensor([[1.0, -2.0]]))
        model[2].bias.fill_(-7.0)
    return model


def test_lasso_and_group_lasso_exact_values() -> None:
    model = _hand_model()
    assert lasso_penalty(model).item() == pytest.approx(3 + 4 + 1 + 2)
    assert group_lasso_penalty(model).item() == pytest.approx(5 + 0 + math.sqrt(5))
    add_noise_injection(model)  # α, biases and BN stay out
    assert lasso_penalty(model).item() == pytest.approx(10.0)
    conv = nn.Conv2d(1, 2, (1, 2), bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[6.0, 8.0]]], [[[-1.0, 0.0]]]]))
    assert group_lasso_penalty(conv).item() == pytest.approx(10 + 1)
    assert lasso_penalty(conv).item() == pytest.approx(15)


def test_lasso_gradients_and_regularizer() -> None:
    model = _hand_model()
    lasso_penalty(model).backward()
    assert torch.equal(model[0].weight.grad, torch.tensor([[1.0, -1.0], [0.0, 0.0]]))
    model.zero_grad()
    group_lasso_penalty(model).backward()  # the all-zero channel has gradient 0, never NaN
    assert torch.allclose(model[0].weight.grad, torch.tensor([[0.6, -0.8], [0.0, 0.0]]))
    reg = SparsityRegularizer(lasso=0.1, group_lasso=0.01)
    expected = 0.1 * 10 + 0.01 * (5 + math.sqrt(5))
    assert reg(model).item() == pytest.approx(expected)
    assert reg.describe() == {"lasso": 0.1, "group_lasso": 0.01}
    assert SparsityRegularizer(lasso=0.0)(model).item() == 0.0
    with pytest.raises(ConfigError, match="lasso"):
        SparsityRegularizer(lasso=-1e-4)
    with pytest.raises(ConfigError, match=r"no nn\.Conv2d or nn\.Linear"):
        lasso_penalty(nn.Sequential(nn.ReLU()))


# ------------------------------------------------------------------------------------- masks


def _two_layers() -> nn.Sequential:
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, 0.2], [0.3, 0.4]]))
        model[1].weight.copy_(torch.tensor([[5.0, -0.05], [6.0, 7.0]]))
    return model


def test_global_and_per_layer_masks_by_hand() -> None:
    model = _two_layers()
    glob = magnitude_masks(model, 0.5)  # the 4 smallest of 8: 0.05, 0.1, 0.2, 0.3
    assert torch.equal(glob["0"], torch.tensor([[False, False], [False, True]]))
    assert torch.equal(glob["1"], torch.tensor([[True, False], [True, True]]))
    per = magnitude_masks(model, 0.5, scope="per_layer")  # two per layer
    assert torch.equal(per["0"], torch.tensor([[False, False], [True, True]]))
    assert torch.equal(per["1"], torch.tensor([[False, False], [True, True]]))
    assert all(m.dtype == torch.bool for m in glob.values())


def test_ties_are_broken_by_position() -> None:
    model = nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        for m in model:
            m.weight.fill_(1.0)
    masks = magnitude_masks(model, 0.5)  # 5 of 10: the first five in module / row-major order
    assert masks["0"].flatten().tolist() == [False] * 5 + [True]
    assert masks["1"].all()
    again = magnitude_masks(model, 0.5)
    assert all(torch.equal(masks[k], again[k]) for k in masks)


@settings(max_examples=25, deadline=None)
@given(
    sparsity=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
    scope=st.sampled_from(["global", "per_layer"]),
)
def test_masks_hit_the_exact_sparsity(sparsity: float, seed: int, scope: str) -> None:
    model = tiny_cnn(seed)
    masks = magnitude_masks(model, sparsity, scope=scope)  # type: ignore[arg-type]
    sizes = {n: m.weight.numel() for n, m in model.named_modules() if n in masks}
    pruned = {n: int((~m).sum()) for n, m in masks.items()}
    if scope == "global":
        assert sum(pruned.values()) == pruned_count(sparsity, sum(sizes.values()))
        kept = torch.cat([model.get_submodule(n).weight.abs()[m] for n, m in masks.items()])
        gone = torch.cat([model.get_submodule(n).weight.abs()[~m] for n, m in masks.items()])
        if kept.numel() and gone.numel():
            assert gone.max() <= kept.min()
    else:
        assert pruned == {n: pruned_count(sparsity, size) for n, size in sizes.items()}
    report = sparsity_report(apply_masks(model, masks))
    assert report["zeros"] >= sum(pruned.values())


def test_pruned_count_rounds_half_up() -> None:
    assert [pruned_count(s, 10) for s in (0.0, 0.25, 0.7, 0.85, 1.0)] == [0, 3, 7, 9, 10]
    assert pruned_count(0.5, 5) == 3


def test_mask_errors() -> None:
    model = _two_layers()
    with pytest.raises(ConfigError, match="sparsity"):
        magnitude_masks(model, 1.5)
    with pytest.raises(ConfigError, match="scope"):
        magnitude_masks(model, 0.5, scope="layer")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="did you mean 1"):
        apply_masks(model, {"1x": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(InputError, match="bool"):
        apply_masks(model, {"0": torch.ones(2, 2)})
    with pytest.raises(InputError, match=r"shape \(2, 3\)"):
        apply_masks(model, {"0": torch.ones(2, 3, dtype=torch.bool)})
    with pytest.raises(InputError, match="non-empty"):
        apply_masks(model, {})
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        magnitude_masks(model, 0.5)


def test_apply_masks_zeroes_weights_and_registers_buffers() -> None:
    model = _two_layers()
    masks = magnitude_masks(model, 0.5)
    apply_masks(model, masks)
    for name, mask in masks.items():
        layer = model.get_submodule(name)
        assert torch.equal(getattr(layer, MASK_BUFFER), mask)
        assert torch.equal(layer.weight != 0, mask)
    assert set(model.state_dict()) == {"0.weight", "1.weight", "0.weight_mask", "1.weight_mask"}
    assert model_transforms(model) == ["masks"]


def _train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
    x = torch.rand(8, 1, 8, 8)
    y = torch.arange(8) % 5
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize("make", ["adam", "sgd"])
@pytest.mark.parametrize("enforce", [True, False])
def test_zeros_stay_zero_through_optimizer_steps_with_momentum(make: str, enforce: bool) -> None:
    model = tiny_cnn()
    optimizer: torch.optim.Optimizer = (
        torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
        if make == "adam"
        else torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    )
    _train_steps(model, optimizer, 3)  # momentum / Adam moments exist before pruning
    masks = magnitude_masks(model, 0.6)
    apply_masks(model, masks)
    before = {n: model.get_submodule(n).weight.detach().clone() for n in masks}
    handle = enforce_masks_after_steps(optimizer, model) if enforce else None
    _train_steps(model, optimizer, 5)
    drifted = any(bool(model.get_submodule(n).weight[~m].ne(0).any()) for n, m in masks.items())
    assert drifted is not enforce  # without the hook the moments move pruned weights
    changed = any(
        not torch.equal(model.get_submodule(n).weight[m], before[n][m]) for n, m in masks.items()
    )
    assert changed  # the kept weights still train
    if handle is not None:
        handle.remove()


def test_enforce_masks_is_a_noop_without_masks() -> None:
    model = tiny_mlp()
    before = copy.deepcopy(model.state_dict())
    enforce_masks(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_pruned_weights_get_no_noise() -> None:
    layer = NoisyLinear(4, 3)
    masks = {"": torch.tensor([[True, False, True, False]] * 3)}
    apply_masks(layer, masks)
    w_tilde = layer.noisy_weight()
    assert torch.equal(w_tilde[:, [1, 3]], torch.zeros(3, 2))
    assert not torch.equal(w_tilde[:, [0, 2]], layer.weight[:, [0, 2]])


def test_sparsity_report_counts_real_zeros() -> None:
    model = _hand_model()  # Linear(2, 2) with 2 zeros, Linear(2, 1) with none; BN ignored
    report = sparsity_report(model)
    assert report["layers"] == {
        "0": {"zeros": 2, "total": 4, "sparsity": 0.5},
        "2": {"zeros": 0, "total": 2, "sparsity": 0.0},
    }
    assert (report["zeros"], report["total"]) == (2, 6)
    assert report["sparsity"] == pytest.approx(1 / 3)
    json.dumps(report)


# -------------------------------------------------------------------------------- transforms


def test_model_transforms_detects_noise_and_masks() -> None:
    model = tiny_mlp()
    assert model_transforms(model) == []
    apply_masks(model, magnitude_masks(model, 0.3))
    assert model_transforms(model) == ["masks"]
    add_noise_injection(model)  # masks keep working on noisy layers (the class changes only)
    assert model_transforms(model) == ["noise_injection", "masks"]
    assert model_transforms(add_noise_injection(tiny_mlp())) == ["noise_injection"]


def _defended_model_a(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = add_noise_injection(models.build("model_a", **SMALL_A))
    with torch.no_grad():
        for alpha in noise_parameters(model):
            alpha.uniform_(0.1, 0.4)
    return apply_masks(model, magnitude_masks(model, 0.5))


@pytest.mark.parametrize("explicit", [True, False])
def test_checkpoint_round_trip_with_noise_and_masks(tmp_path: Path, explicit: bool) -> None:
    model = _defended_model_a()
    extra = {"transforms": ["noise_injection", "masks"]} if explicit else None
    path = save_checkpoint(
        tmp_path / "m.safetensors", model, model_name="model_a", model_kwargs=SMALL_A, extra=extra
    )
    assert read_meta(path).extra["transforms"] == ["noise_injection", "masks"]
    loaded, meta = load_checkpoint(path)
    assert meta.extra["transforms"] == ["noise_injection", "masks"]
    saved = model.state_dict()
    assert list(loaded.state_dict()) == list(saved)
    assert all(torch.equal(saved[k], v) for k, v in loaded.state_dict().items())
    assert all(isinstance(m, NoisyLinear) for m in loaded.modules() if isinstance(m, nn.Linear))
    assert model_transforms(loaded) == ["noise_injection", "masks"]
    masks = {
        n: getattr(m, MASK_BUFFER) for n, m in loaded.named_modules() if n in saved_masks(saved)
    }
    # a further optimizer step on the loaded model keeps the pruned weights at zero
    loaded.train()
    optimizer = torch.optim.Adam(parameter_groups(loaded, 1e-3), lr=0.05)
    enforce_masks_after_steps(optimizer, loaded)
    x, y = torch.rand(16, 2), torch.arange(16) % 2
    optimizer.zero_grad()
    F.cross_entropy(loaded(x), y).backward()
    optimizer.step()
    for name, mask in masks.items():
        weight = loaded.get_submodule(name).weight
        assert torch.equal(weight[~mask], torch.zeros(int((~mask).sum())))
        assert not torch.equal(weight[mask], saved[f"{name}.weight"][mask])


def saved_masks(state: dict[str, Tensor]) -> set[str]:
    return {k[: -len(".weight_mask")] for k in state if k.endswith(".weight_mask")}


def test_checkpoint_noise_only_and_plain_metadata_unchanged(tmp_path: Path) -> None:
    torch.manual_seed(0)
    plain = models.build("model_a", **SMALL_A)
    path = save_checkpoint(
        tmp_path / "p.safetensors", plain, model_name="model_a", model_kwargs=SMALL_A
    )
    assert "transforms" not in read_meta(path).extra
    noisy = add_noise_injection(copy.deepcopy(plain), layers=["fc2"])
    path = save_checkpoint(
        tmp_path / "n.safetensors", noisy, model_name="model_a", model_kwargs=SMALL_A
    )
    loaded, meta = load_checkpoint(path)
    assert meta.extra["transforms"] == ["noise_injection"]
    # only the layer that was noisy comes back noisy (the transform follows the file's keys)
    assert [type(m).__name__ for m in loaded.modules() if isinstance(m, nn.Linear)] == [
        "Linear",
        "NoisyLinear",
        "Linear",
        "Linear",
    ]
    assert torch.equal(loaded.get_submodule("fc2").alpha, noisy.get_submodule("fc2").alpha)
    assert not isinstance(loaded.get_submodule("fc1"), NoiseInjection)


def _rewrite_transforms(path: Path, transforms: Any) -> Path:
    tensors = safetensors.torch.load_file(path)
    with safetensors.safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()[METADATA_KEY])
    meta["transforms"] = transforms
    out = path.with_name("edited.safetensors")
    safetensors.torch.save_file(tensors, out, metadata={METADATA_KEY: json.dumps(meta)})
    return out


def test_unknown_or_corrupt_transform_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = save_checkpoint(
        tmp_path / "m.safetensors", _defended_model_a(), model_name="model_a", model_kwargs=SMALL_A
    )
    with pytest.raises(CheckpointError, match="needs transforms \\['bogus'\\]") as caught:
        load_checkpoint(_rewrite_transforms(path, ["noise_injection", "bogus"]))
    _one_line(caught)
    with pytest.raises(CheckpointError, match="corrupt lsakit metadata") as caught:
        load_checkpoint(_rewrite_transforms(path, "masks"))
    _one_line(caught)
    with pytest.raises(CheckpointError, match="unexpected keys") as caught:
        load_checkpoint(_rewrite_transforms(path, ["noise_injection"]))  # masks not recreated
    _one_line(caught)


def test_save_refuses_bad_transforms(tmp_path: Path) -> None:
    model = _defended_model_a()
    with pytest.raises(ConfigError, match="unknown transforms \\['prune'\\]"):
        save_checkpoint(
            tmp_path / "x.safetensors",
            model,
            model_name="model_a",
            model_kwargs=SMALL_A,
            extra={"transforms": ["prune"]},
        )
    with pytest.raises(InputError, match="list of transform names"):
        save_checkpoint(
            tmp_path / "x.safetensors",
            model,
            model_name="model_a",
            model_kwargs=SMALL_A,
            extra={"transforms": "masks"},
        )
    with pytest.raises(ConfigError, match="unexpected keys"):  # declared none, but carries both
        save_checkpoint(
            tmp_path / "x.safetensors",
            model,
            model_name="model_a",
            model_kwargs=SMALL_A,
            extra={"transforms": []},
        )
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- ensemble loss


class SpyAttack(Attack):
    """Records the labels it is called with and shifts x by a fixed amount."""

    name: ClassVar[str] = "spy"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model, eps=0.1)
        self.labels: list[Tensor] = []
        self.training_flags: list[bool] = []

    def perturb(self, x: Tensor, y: Tensor | None) -> Tensor:
        assert y is not None
        self.labels.append(y.clone())
        self.training_flags.append(self.model.training)
        return clamp_unit(x + 0.1)

    def params(self) -> dict[str, Any]:
        return self._base_params()


def test_pni_ensemble_loss_attacks_the_models_own_predictions() -> None:
    model = tiny_mlp()
    x = torch.rand(6, 4)
    with torch.no_grad():
        predicted = model(x).argmax(dim=1)
    y = (predicted + 1) % 3  # true labels all differ from the predictions
    spy = SpyAttack(model)
    loss, logits_clean, logits_adv = pni_ensemble_loss(model, x, y, spy)
    assert len(spy.labels) == 1 and torch.equal(spy.labels[0], predicted)
    assert spy.training_flags == [False] and model.training  # attack in eval, mode restored
    assert torch.equal(logits_clean, model(x))
    assert torch.equal(logits_adv, model(clamp_unit(x + 0.1)))
    expected = 0.5 * F.cross_entropy(logits_clean, y) + 0.5 * F.cross_entropy(logits_adv, y)
    assert torch.equal(loss, expected)


def test_pni_ensemble_loss_on_a_noisy_model_trains_alpha() -> None:
    model = add_noise_injection(tiny_mlp())
    x, y = torch.rand(6, 4), torch.arange(6) % 3
    spy = SpyAttack(model)
    loss, logits_clean, logits_adv = pni_ensemble_loss(model, x, y, spy)
    assert torch.equal(spy.labels[0], logits_clean.argmax(dim=1))
    expected = 0.5 * (F.cross_entropy(logits_clean, y) + F.cross_entropy(logits_adv, y))
    assert torch.allclose(loss, expected)
    loss.backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in noise_parameters(model))
    # a real attack works too
    pgd = PGD(model, eps=0.1, steps=2, seed=0)
    assert torch.isfinite(pni_ensemble_loss(model, x, y, pgd)[0])


def test_pni_ensemble_loss_errors() -> None:
    model = tiny_mlp()
    x, y = torch.rand(4, 4), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ConfigError, match="another model"):
        pni_ensemble_loss(model, x, y, SpyAttack(tiny_mlp()))
    with pytest.raises(ConfigError, match="lsakit Attack"):
        pni_ensemble_loss(model, x, y, lambda a, b: a)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="outside \\[0, 1\\]"):
        pni_ensemble_loss(model, x + 2, y, SpyAttack(model))
    with pytest.raises(InputError, match=r"labels in \[7, 7\]"):
        pni_ensemble_loss(model, x, torch.full((4,), 7), SpyAttack(model))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_noise_and_masks_follow_the_model_to_cuda(tmp_path: Path) -> None:
    model = _defended_model_a().cuda()
    x = torch.rand(4, 2, device="cuda")
    assert not torch.equal(model(x), model(x))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    enforce_masks_after_steps(optimizer, model)
    F.cross_entropy(model(x), torch.zeros(4, dtype=torch.long, device="cuda")).backward()
    optimizer.step()
    assert sparsity_report(model)["sparsity"] == 0.5
    path = save_checkpoint(
        tmp_path / "m.safetensors", model, model_name="model_a", model_kwargs=SMALL_A
    )
    loaded, _ = load_checkpoint(path, map_location="cuda")
    assert all(b.device.type == "cuda" for b in loaded.buffers())
    assert sparsity_report(loaded)["sparsity"] == 0.5
