"""LSA on models nobody here wrote: Hugging Face transformers, timm and torchvision classes.

Every model is built from a config with random weights and small inputs; no network. timm and
torchvision need a torch build that torchvision imports beside (the Makefile's venv has one);
where they cannot be imported, their cases skip with the reason.

For each architecture: the default selection captures exactly the activation calls an independent
count sees (the test's own module hooks and its own TorchFunctionMode, with its own lists of
activation classes and functions), in order, with the same tensors; hooks are gone after the block, error or not;
relative errors equal an independent float64 computation; analyze restores modes and leaves the
state_dict (BN statistics included) unchanged; one AT-LR step sends gradient to the parameters
before the regularized layer. BERT runs in embedding space (lsakit.text), in the unbounded domain.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode, _get_current_function_mode_stack

from lsakit import LayerProbe, analyze, input_domain, relative_errors
from lsakit.activations import InvisibleActivationWarning, register_activation
from lsakit.perturb import FGSM, GaussianNoise
from lsakit.perturb.base import ZeroGradientWarning
from lsakit.train.regularizers import LayerwiseRegularizer

#: Activation classes by name, written down independently of lsakit's own tables (read from the
#: sources of torch.nn, timm.layers.activations and transformers.activations).
INDEPENDENT_ACTIVATIONS = {
    "ReLU", "ReLU6", "GELU", "SiLU", "Hardswish", "Hardsigmoid", "Sigmoid", "Tanh", "Mish",
    "GELUActivation", "NewGELUActivation", "QuickGELU", "GELUTanh", "Swish", "HardSwish",
    "HardSigmoid",
}  # fmt: skip


#: Activation functions, written down independently of lsakit's FUNCTIONAL_ACTIVATIONS: a call of
#: one outside an activation module is an activation call.
INDEPENDENT_FUNCTIONS = {
    F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, F.relu6,
    F.gelu, F.silu, F.hardswish, F.hardsigmoid, F.mish, F.elu, F.leaky_relu, F.softplus,
    torch.tanh, torch.Tensor.tanh, F.tanh, torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid,
    torch.Tensor.sigmoid_, torch.sigmoid_,
}  # fmt: skip


def _hf() -> Any:
    return pytest.importorskip("transformers", reason="transformers is not installed")


def _timm() -> Any:
    try:
        import timm
    except ImportError as e:  # timm imports torchvision, which needs a matching torch build
        pytest.skip(f"timm cannot be imported here ({e}); the Makefile venv has it")
    return timm


def _tv() -> Any:
    try:
        import torchvision
    except (ImportError, RuntimeError) as e:
        pytest.skip(f"torchvision cannot be imported here ({e}); the Makefile venv has it")
    return torchvision.models


def hf_vit() -> nn.Module:
    t = _hf()
    return t.ViTForImageClassification(
        t.ViTConfig(
            image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=32, num_labels=3,
        )
    )  # fmt: skip


def hf_swin() -> nn.Module:
    t = _hf()
    return t.SwinForImageClassification(
        t.SwinConfig(
            image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2],
            window_size=2, num_labels=3,
        )
    )  # fmt: skip


def hf_convnext() -> nn.Module:
    t = _hf()
    return t.ConvNextForImageClassification(
        t.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, num_labels=3)
    )


def hf_resnet() -> nn.Module:
    t = _hf()
    return t.ResNetForImageClassification(
        t.ResNetConfig(
            embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=3
        )
    )


def hf_mobilenet_v2() -> nn.Module:
    t = _hf()
    return t.MobileNetV2ForImageClassification(
        t.MobileNetV2Config(image_size=32, depth_multiplier=0.5, num_labels=3)
    )


def timm_convnext_atto() -> nn.Module:
    return _timm().create_model("convnext_atto", num_classes=3)  # type: ignore[no-any-return]


def timm_vit() -> nn.Module:
    return _timm().create_model(  # type: ignore[no-any-return]
        "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=3
    )


def timm_resnet18() -> nn.Module:
    return _timm().create_model("resnet18", num_classes=3)  # type: ignore[no-any-return]


def tv_mobilenet_v3() -> nn.Module:
    return _tv().mobilenet_v3_small(num_classes=3)  # type: ignore[no-any-return]


def tv_googlenet() -> nn.Module:  # no activation module: 57 functional ReLUs at full size
    return _tv().GoogLeNet(num_classes=3, aux_logits=False, init_weights=True)  # type: ignore[no-any-return]


def tv_inception_v3() -> nn.Module:  # functional ReLUs in BasicConv2d; 75×75 inputs at least
    return _tv().Inception3(num_classes=3, aux_logits=False, init_weights=True)  # type: ignore[no-any-return]


def tv_efficientnet_b0() -> nn.Module:
    return _tv().efficientnet_b0(num_classes=3)  # type: ignore[no-any-return]


def tv_regnet() -> nn.Module:
    return _tv().regnet_x_400mf(num_classes=3)  # type: ignore[no-any-return]


def timm_mobilevit() -> nn.Module:  # ReLUs called as functions in its linear attention
    return _timm().create_model("mobilevitv2_050", num_classes=3)  # type: ignore[no-any-return]


def hf_roberta() -> nn.Module:  # its classification head calls torch.tanh
    return _hf_text("Roberta", max_position_embeddings=24)  # RoBERTa's positions start at 2


def tv_densenet() -> nn.Module:  # dense connections; a functional F.relu in forward
    tvm = _tv()
    return tvm.DenseNet(  # type: ignore[no-any-return]
        growth_rate=4, block_config=(2, 2), num_init_features=8, bn_size=2, num_classes=3
    )


def tv_swin() -> nn.Module:
    tvm = _tv()
    return tvm.swin_transformer.SwinTransformer(  # type: ignore[no-any-return]
        patch_size=[2, 2], embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=[2, 2],
        num_classes=3,
    )  # fmt: skip


def tv_vit() -> nn.Module:  # starts with a zero head: its input gradient is exactly zero
    return _tv().VisionTransformer(  # type: ignore[no-any-return]
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=3,
    )  # fmt: skip


def hf_bert() -> nn.Module:  # a text model, in embedding space (lsakit.text)
    return _hf_text("Bert", max_position_embeddings=16)


def _hf_text(family: str, **config: int) -> nn.Module:
    """A small transformers sequence classifier of ``family``, in embedding space."""
    t = _hf()
    from lsakit.text import EmbeddingClassifier

    settings = getattr(t, f"{family}Config")(
        vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, num_labels=3, **config,
    )  # fmt: skip
    return EmbeddingClassifier(getattr(t, f"{family}ForSequenceClassification")(settings))


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "hf-vit": hf_vit,
    "hf-swin": hf_swin,
    "hf-convnext": hf_convnext,
    "hf-resnet": hf_resnet,
    "hf-mobilenet-v2": hf_mobilenet_v2,
    "timm-convnext-atto": timm_convnext_atto,
    "timm-vit": timm_vit,
    "timm-resnet18": timm_resnet18,
    "tv-mobilenet-v3": tv_mobilenet_v3,
    "tv-densenet": tv_densenet,
    "tv-swin": tv_swin,
    "hf-bert": hf_bert,
    "hf-roberta": hf_roberta,
    "tv-googlenet": tv_googlenet,
    "tv-inception-v3": tv_inception_v3,
    "tv-efficientnet-b0": tv_efficientnet_b0,
    "tv-regnet": tv_regnet,
    "timm-mobilevit": timm_mobilevit,
}
#: Inputs outside [0, 1]: embeddings (unbounded).
UNBOUNDED_INPUTS = {"hf-bert", "hf-roberta"}
#: Image sides other than 32.
SIDES = {"tv-inception-v3": 75, "timm-mobilevit": 64}


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return ARCHITECTURES[name]()


def _batch(n: int = 2, side: int = 32) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, side, side, generator=g), torch.tensor([0, 2][:n])


def _inputs(name: str) -> tuple[Tensor, Tensor]:
    if name in UNBOUNDED_INPUTS:  # word embeddings of 8 tokens
        g = torch.Generator().manual_seed(0)
        return torch.randn(2, 8, 16, generator=g), torch.tensor([0, 2])
    return _batch(side=SIDES.get(name, 32))


def _domain(name: str) -> Any:
    """The input domain the architecture's inputs live in, declared for the test's body."""
    return input_domain(None if name in UNBOUNDED_INPUTS else "unit")


def _noisy(name: str, x: Tensor, std: float, seed: int) -> Tensor:
    out = x + std * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    return out if name in UNBOUNDED_INPUTS else out.clamp(0, 1)


def _logits(out: Any) -> Tensor:
    return out if isinstance(out, Tensor) else out["logits"]


class _Calls(TorchFunctionMode):
    """The test's own function mode: outputs of activation functions called while no
    activation module runs."""

    def __init__(self, outputs: list[Tensor], active: list[int]) -> None:
        super().__init__()
        self.outputs, self.active = outputs, active

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func in INDEPENDENT_FUNCTIONS and self.active[0] == 0:
            self.outputs.append(out.detach().clone())
        return out


def _independent_capture(model: nn.Module, x: Tensor) -> list[Tensor]:
    """Outputs of every activation call, in order: each call of an activation module (outermost),
    by our own hooks, and each activation function called outside one, by our own mode."""
    outputs: list[Tensor] = []
    handles = []
    active = [0]

    def pre(module: nn.Module, args: Any) -> None:
        active[0] += 1

    def post(module: nn.Module, args: Any, out: Tensor) -> None:
        active[0] -= 1
        if active[0] == 0:
            outputs.append(out.detach().clone())

    for _, module in model.named_modules():
        if type(module).__name__ in INDEPENDENT_ACTIVATIONS:
            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        with torch.no_grad(), _Calls(outputs, active):
            model(x)
    finally:
        for h in handles:
            h.remove()
    return outputs


def _hook_count(model: nn.Module) -> int:
    from torch.nn.modules import module as m

    local = sum(len(mod._forward_hooks) + len(mod._forward_pre_hooks) for mod in model.modules())
    return local + len(m._global_forward_hooks) + len(m._global_forward_pre_hooks)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_default_selection_captures_every_activation_call(name: str) -> None:
    with _domain(name):
        model = _build(name).eval()
        x, _ = _inputs(name)
        expected = _independent_capture(model, x)
        hooks = _hook_count(model)
        with warnings.catch_warnings():
            warnings.simplefilter("error", InvisibleActivationWarning)  # none of these hides one
            with torch.no_grad(), LayerProbe(model) as probe:
                model(x)
                got = probe.take()
        assert _hook_count(model) == hooks and not _get_current_function_mode_stack()
        assert len(got) == len(expected) > 0
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a, b)
        with pytest.raises(RuntimeError, match="boom"), LayerProbe(model):  # error inside the block
            raise RuntimeError("boom")
        assert _hook_count(model) == hooks
        last = list(model.modules())[-1]  # an error in the middle of a probed forward
        handle = last.register_forward_pre_hook(_boom)
        with pytest.raises(RuntimeError, match="boom"), torch.no_grad(), LayerProbe(model):
            model(x)
        handle.remove()
        assert _hook_count(model) == hooks and not _get_current_function_mode_stack()


def _boom(module: nn.Module, args: Any) -> None:
    raise RuntimeError("boom")


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_relative_errors_match_a_float64_computation(name: str) -> None:
    with _domain(name):
        model = _build(name).eval()
        x, _ = _inputs(name)
        x_hat = _noisy(name, x, 0.05, 1)
        clean, pert = _independent_capture(model, x), _independent_capture(model, x_hat)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InvisibleActivationWarning)
            with torch.no_grad(), LayerProbe(model) as probe:
                model(x)
                probe.take()
        # A layer whose clean float32 norm is 0 has no relative error (a random HF MobileNetV2's late
        # activations are ~1e-22, whose squares underflow): leave it out, selecting the others by the
        # names the probe printed.
        defined = [
            i for i, c in enumerate(clean) if float(torch.linalg.vector_norm(c.flatten())) > 0
        ]
        expected = [
            float(torch.linalg.vector_norm((clean[i].double() - pert[i].double()).flatten()))
            / float(torch.linalg.vector_norm(clean[i].double().flatten()))
            for i in defined
        ]
        values = relative_errors(model, x, x_hat, layers=[probe.layers[i].name for i in defined])
        assert len(defined) >= len(clean) // 2
        assert values == pytest.approx(expected, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_analyze_restores_modes_and_state(name: str) -> None:
    with _domain(name):
        model = _build(name).train()
        x, y = _inputs(name)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        modes = [m.training for m in model.modules()]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (InvisibleActivationWarning, ZeroGradientWarning))
            result = analyze(
                model,
                [(x, y)],
                {"gaussian": GaussianNoise(std=0.05, seed=0), "fgsm": FGSM(model, eps=0.03)},
            )
        assert [m.training for m in model.modules()] == modes
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert len(result.layers) == len(result.perturbation("fgsm").layers) > 0


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_an_at_lr_step_reaches_the_parameters_before_the_regularized_layer(name: str) -> None:
    with _domain(name):
        model = _build(name).eval()
        x, _ = _inputs(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (InvisibleActivationWarning, ZeroGradientWarning))
            with torch.no_grad(), LayerProbe(model) as probe:
                model(x)
                probe.take()
            middle = probe.layers[len(probe.layers) // 2]
            reg = LayerwiseRegularizer([middle.name], gamma=1.0).resolve(model, x)
            x_adv = _noisy(name, x, 0.1, 2)
            with LayerProbe(model, reg.layers, detach=False) as train_probe:
                model(x)
                clean = train_probe.take()
                model(x_adv)
                adv = train_probe.take()
        reg(clean, adv).backward()
        # The first parameter the forward uses (in embedding space, the word-embedding table is not).
        first = next(p for n, p in model.named_parameters() if "word_embeddings" not in n)
        assert first.grad is not None and float(first.grad.abs().sum()) > 0


# -- the three naming failures of the issue ------------------------------------------------------
class Block(nn.Module):
    """torchvision's BasicBlock pattern: one ReLU module called twice per forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.conv1(x))
        return self.relu(self.conv2(out) + x)


class Reused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Block()
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.block(x))  # type: ignore[no-any-return]


def test_a_reused_modules_later_call_can_be_named() -> None:
    torch.manual_seed(0)
    model = Reused().eval()
    x, _ = _batch()
    with torch.no_grad(), LayerProbe(model) as probe:
        model(x)
        both = probe.take()
    assert [layer.name for layer in probe.layers] == ["block.relu#0", "block.relu#1"]
    for printed, want in ((probe.layers[1].name, both[1]), (str(probe.layers[0]), both[0])):
        with torch.no_grad(), LayerProbe(model, [printed]) as again:  # round trip
            model(x)
            (rep,) = again.take()
        assert torch.equal(rep, want)


def test_regularizing_a_reused_module_regularizes_each_call() -> None:
    torch.manual_seed(0)
    model = Reused()
    x, y = _batch()
    reg = LayerwiseRegularizer(["block.relu"], gamma=0.5).resolve(model, x)
    assert reg.layers == ["block.relu#0", "block.relu#1"] and reg.gammas == [0.5, 0.5]
    from lsakit.train.objectives import build_objective
    from lsakit.train.trainer import training_step

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with LayerProbe(model, reg.layers, detach=False) as probe:
        loss, reg_value, _ = training_step(
            model, build_objective("fgsm", eps=0.1), reg, probe, optimizer, x, y
        )
    assert reg_value > 0 and loss == loss  # finite, not NaN


def test_an_mvl_list_of_conv_outputs_regularizes_those_conv_outputs() -> None:
    torch.manual_seed(0)
    model = Reused().eval()
    x, y = _batch()
    result = analyze(model, [(x, y)], {"fgsm": FGSM(model, eps=0.1)}, layers=nn.Conv2d)
    assert [la.module_name for la in result.layers] == ["block.conv1", "block.conv2"]
    assert result.selection == ["type:torch.nn.modules.conv.Conv2d"]
    reg = LayerwiseRegularizer.from_mvl(
        model, [(x, y)], attack=FGSM(model, eps=0.1), eta=-10.0, layers=nn.Conv2d
    )
    assert reg.layers == ["block.conv1", "block.conv2"]  # not the ReLUs labelled L0, L1
    with LayerProbe(model, result.selection) as probe:  # the recorded selection selects again
        model(x)
        probe.take()
    assert [la.name for la in probe.layers] == ["block.conv1", "block.conv2"]


# -- activations lsakit does not know, and functional ones ------------------------------------
class Wiggle(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(2 * x)


class Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(4, 6), Wiggle(), nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.relu(self.act(self.fc1(x))))  # type: ignore[no-any-return]


class Square(nn.Module):  # an activation no list knows, calling no activation function
    def forward(self, x: Tensor) -> Tensor:
        return x * x


def test_unknown_activation_classes_are_seen_through_and_can_be_registered() -> None:
    from lsakit import register_functional_activation
    from lsakit.activations import FUNCTIONAL_ACTIVATIONS, _registered
    from lsakit.errors import ConfigError

    model, x = Functional(), torch.rand(5, 4)
    with torch.no_grad(), LayerProbe(model) as probe:  # the sigmoid inside Wiggle is seen
        model(x)
        inner, relu = probe.take()
    assert [la.name for la in probe.layers] == ["act:sigmoid#0", ":relu#0"]
    assert probe.invisible_activation_calls == 0
    torch.testing.assert_close(inner, torch.sigmoid(2 * model.fc1(x)))
    register_activation(Wiggle)
    try:
        with torch.no_grad(), LayerProbe(model) as probe:
            model(x)
            (wiggle, relu_again) = probe.take()
        assert [la.name for la in probe.layers] == ["act", ":relu#0"]  # its sigmoid is its own
        torch.testing.assert_close(wiggle, model.act(model.fc1(x)))
        assert torch.equal(relu, relu_again)
    finally:
        _registered.remove(Wiggle)
    square = nn.Sequential(nn.Linear(4, 4), Square(), nn.Linear(4, 2))
    with (
        LayerProbe(square) as probe,
        pytest.raises(ConfigError, match=r"test_any_model\.Square — register them"),
    ):
        square(x)
        probe.take()
    register_functional_activation(torch.erf, "erf")  # a function no list knows, registered
    try:
        erf = nn.Sequential(nn.Linear(4, 4), nn.Identity())
        erf.forward = lambda t: torch.erf(erf[0](t))  # type: ignore[method-assign]
        with torch.no_grad(), LayerProbe(erf, [":erf#0"]) as probe:
            erf(x)
            (rep,) = probe.take()
        torch.testing.assert_close(rep, torch.erf(erf[0](x)))
    finally:
        del FUNCTIONAL_ACTIVATIONS[torch.erf]


def test_scripted_modules_are_warned_about_once_and_fast_paths_step_aside() -> None:
    inner = torch.jit.script(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), inner)
    with (
        pytest.warns(InvisibleActivationWarning, match=r"compiled modules of Sequential \('2'\)"),
        torch.no_grad(),
        LayerProbe(model) as probe,
    ):
        model(torch.rand(3, 4))
        probe.take()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per probe
        with torch.no_grad():
            model(torch.rand(3, 4))
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True).eval()
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.rand(2, 5, 8)
    with torch.no_grad(), LayerProbe(encoder) as probe:  # the fused C++ fast path steps aside
        out = encoder(x)
        reps = probe.take()
    assert [la.name for la in probe.layers] == ["layers.0:relu#0", "layers.1:relu#0"]
    with torch.no_grad():
        fast = encoder(x)  # the fast path, without a probe
    torch.testing.assert_close(out, fast)
    assert len(reps) == 2 and probe.invisible_activation_calls == 0


def test_zero_gradients_are_warned_about_and_counted() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 8), nn.ReLU(), nn.Linear(8, 3))
    nn.init.zeros_(model[3].weight)  # a zero head, as torchvision's ViT starts
    x, y = _batch()
    attack = FGSM(model, eps=0.1)
    with pytest.warns(ZeroGradientWarning, match="exactly zero on 2 of 2 samples"):
        x_adv = attack(x, y)
    assert torch.equal(x_adv, x) and attack.last_zero_gradient == 2
    result = analyze(model, [(x, y), (x, y)], {"fgsm": attack})
    assert result.perturbation("fgsm").zero_gradient_samples == 4


def test_torchvisions_vit_starts_with_a_zero_gradient_which_analyze_counts() -> None:
    model = tv_vit().eval()  # its head is initialised to zero
    x, y = _batch()
    with pytest.warns(ZeroGradientWarning):
        result = analyze(model, [(x, y)], {"fgsm": FGSM(model, eps=0.1)})
    assert result.perturbation("fgsm").zero_gradient_samples == 2
    mu = result.perturbation("fgsm").mu
    assert mu is not None and mu < 1e-5  # nothing moved (float noise only): the warning says why


def test_a_functional_capture_round_trips_and_an_at_lr_step_on_it_moves_the_parameters() -> None:
    from lsakit.train.objectives import build_objective
    from lsakit.train.trainer import training_step

    torch.manual_seed(0)
    model = tv_googlenet().eval()  # every activation is an F.relu in BasicConv2d.forward
    x, y = _batch()
    with torch.no_grad(), LayerProbe(model) as probe:
        model(x)
        every = probe.take()
    names = [layer.name for layer in probe.layers]
    assert len(names) == 57 and all(":relu#" in n for n in names)
    assert names[:3] == ["conv1:relu#0", "conv2:relu#0", "conv3:relu#0"]
    k = len(names) // 2
    for spec in ([names[k]], [str(probe.layers[k])], [f"L{k}"]):  # name, as printed, label
        with torch.no_grad(), LayerProbe(model, spec) as again:
            model(x)
            (rep,) = again.take()
        assert [la.name for la in again.layers] == [names[k]] and torch.equal(rep, every[k])
    reg = LayerwiseRegularizer([names[k]], gamma=1.0).resolve(model, x)
    assert reg.layers == [names[k]]
    plain = copy.deepcopy(model)
    for net, regularizer in ((model, reg), (plain, None)):  # one FGSM step with LR, one without
        optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
        with LayerProbe(net, reg.layers, detach=False) as train_probe:
            _, reg_value, _ = training_step(
                net, build_objective("fgsm", eps=0.1), regularizer, train_probe, optimizer, x, y
            )
        assert (reg_value > 0) == (regularizer is not None)
    # LR moved the first convolution (before the layer), not the classifier (after it).
    assert not torch.equal(model.conv1.conv.weight, plain.conv1.conv.weight)
    assert torch.equal(model.fc.weight, plain.fc.weight)
