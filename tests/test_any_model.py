"""LSA on models nobody here wrote: Hugging Face transformers, timm and torchvision classes.

Every model is built from a config with random weights and small inputs; no network. timm and
torchvision need a torch build that torchvision imports beside (the Makefile's venv has one);
where they cannot be imported, their cases skip with the reason.

For each architecture: the default selection captures exactly the activation calls an independent
count of module calls sees, with the same tensors; hooks are gone after the block, error or not;
relative errors equal an independent float64 computation; analyze restores modes and leaves the
state_dict (BN statistics included) unchanged; one AT-LR step sends gradient to the parameters
before the regularized layer. BERT runs in embedding space (lsakit.text), in the unbounded domain.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
    t = _hf()
    from lsakit.text import EmbeddingClassifier

    config = t.BertConfig(
        vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16, num_labels=3,
    )  # fmt: skip
    return EmbeddingClassifier(t.BertForSequenceClassification(config))


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
}
#: Inputs outside [0, 1]: embeddings (unbounded).
UNBOUNDED_INPUTS = {"hf-bert"}


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return ARCHITECTURES[name]()


def _batch(n: int = 2) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, 32, 32, generator=g), torch.tensor([0, 2][:n])


def _inputs(name: str) -> tuple[Tensor, Tensor]:
    if name in UNBOUNDED_INPUTS:  # word embeddings of 8 tokens
        g = torch.Generator().manual_seed(0)
        return torch.randn(2, 8, 16, generator=g), torch.tensor([0, 2])
    return _batch()


def _domain(name: str) -> Any:
    """The input domain the architecture's inputs live in, declared for the test's body."""
    return input_domain(None if name in UNBOUNDED_INPUTS else "unit")


def _noisy(name: str, x: Tensor, std: float, seed: int) -> Tensor:
    out = x + std * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    return out if name in UNBOUNDED_INPUTS else out.clamp(0, 1)


def _logits(out: Any) -> Tensor:
    return out if isinstance(out, Tensor) else out["logits"]


def _independent_capture(model: nn.Module, x: Tensor) -> list[Tensor]:
    """Outputs of every call of an activation module (outermost), by our own hooks."""
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
        with torch.no_grad():
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
            warnings.simplefilter("ignore", InvisibleActivationWarning)
            with torch.no_grad(), LayerProbe(model) as probe:
                model(x)
                got = probe.take()
        assert _hook_count(model) == hooks
        assert len(got) == len(expected) > 0
        for a, b in zip(got, expected, strict=True):
            assert torch.equal(a, b)
        with pytest.raises(RuntimeError, match="boom"), LayerProbe(model):  # error inside the block
            raise RuntimeError("boom")
        assert _hook_count(model) == hooks


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


def test_unknown_activation_classes_are_named_and_can_be_registered() -> None:
    from lsakit.activations import _registered
    from lsakit.errors import ConfigError

    model = Functional()
    with pytest.raises(ConfigError, match=r"test_any_model\.Wiggle — register them"):
        LayerProbe(model)
    register_activation(Wiggle)
    try:
        x = torch.rand(5, 4)
        with (
            pytest.warns(
                InvisibleActivationWarning,
                match=r"1 activation call ran as a function .* 1× relu in Functional\.forward",
            ),
            torch.no_grad(),
            LayerProbe(model) as probe,
        ):
            model(x)
            (rep,) = probe.take()
        assert probe.invisible_activation_calls == 1
        torch.testing.assert_close(rep, model.act(model.fc1(x)))
        # sigmoid inside the registered activation module is visible: not counted.
    finally:
        _registered.remove(Wiggle)


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
