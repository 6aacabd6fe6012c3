"""Models outside the registry (lsakit.models.sources) and loading weights into them."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

from helpers import importable
from lsakit import models
from lsakit.checkpoint import load_checkpoint, load_weights, read_meta, save_checkpoint
from lsakit.errors import CheckpointError, ConfigError


class Evil:
    """Not a tensor: torch.load(weights_only=True) refuses to unpickle it."""


FACTORY = """
import torch
from torch import nn

CALLS = []

def tiny(*, width: int = 8, classes: int = 2) -> nn.Module:
    CALLS.append(width)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, width), nn.ReLU(), nn.Linear(width, classes))

def not_a_model() -> int:
    return 3

VALUE = 1
"""


needs_transformers = pytest.mark.skipif(
    not importable("transformers"), reason="transformers not installed (pip install 'lsakit[hf]')"
)


@pytest.fixture
def factory_file(tmp_path: Path) -> Path:
    path = tmp_path / "net.py"
    path.write_text(FACTORY)
    return path


def hf_dir(tmp_path: Path) -> Path:
    from transformers import ViTConfig

    config = ViTConfig(
        image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=32, num_labels=2,
        architectures=["ViTForImageClassification"],
    )  # fmt: skip
    config.save_pretrained(tmp_path / "vit")
    return tmp_path / "vit"


def test_parse_spec_forms() -> None:
    cases = {
        "model_a": ("registry", "model_a", None),
        "timm:resnet18": ("timm", "resnet18", None),
        "torchvision:resnet18": ("torchvision", "resnet18", None),
        "hf:some/dir": ("hf", "some/dir", None),
        "pkg.mod:make": ("module", "pkg.mod", "make"),
        "dir/net.py:make": ("file", "dir/net.py", "make"),
    }
    for text, (kind, target, factory) in cases.items():
        spec = models.parse_spec(text)
        assert (spec.kind, spec.target, spec.factory) == (kind, target, factory)
        assert spec.runs_code == (kind in ("module", "file"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "no model given"),
        ("tf:resnet", "'tf' is not a model source"),
        ("a b:c", "neither a module path nor a .py file"),
        ("x.py:1f", "not a factory name"),
        ("timm:", "names no model"),
        ("nowhere/net.py:tiny", "no Python file"),
        ("hf:/no/such/dir", "config.json"),
        ("os.path:nope", "has no factory 'nope'"),
        ("resnet18", "unknown model 'resnet18'; did you mean 'preact_resnet18'"),
    ],
)
def test_bad_specs_fail_in_resolve_with_one_line(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        models.resolve(spec)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_missing_package_names_what_to_install() -> None:
    for prefix, package in (("torchvision", "torchvision"), ("timm", "timm")):
        if importable(package):
            continue
        with pytest.raises(ConfigError, match="pip install"):
            models.resolve(f"{prefix}:resnet18")


def test_file_factory_builds_with_model_args_and_checks_them(factory_file: Path) -> None:
    model = models.build(f"{factory_file}:tiny", width=5)
    assert isinstance(model, nn.Sequential) and model[1].out_features == 5
    with pytest.raises(ConfigError, match="does not take these arguments"):
        models.build(f"{factory_file}:tiny", depth=3)
    with pytest.raises(ConfigError, match=r"built a int, not a torch\.nn\.Module"):
        models.build(f"{factory_file}:not_a_model")
    with pytest.raises(ConfigError, match="has a non-callable factory 'VALUE'"):
        models.resolve(f"{factory_file}:VALUE")
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        models.resolve(f"{factory_file}:tinny")
    broken = factory_file.with_name("broken.py")
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match=r"importing .*broken\.py failed: RuntimeError: boom"):
        models.resolve(f"{broken}:tiny")


def test_checkpoint_of_a_code_model_needs_the_spec_named(
    factory_file: Path, tmp_path: Path
) -> None:
    spec = f"{factory_file}:tiny"
    model = models.build(spec, width=6)
    path = save_checkpoint(tmp_path / "m.safetensors", model, model_name=spec,
                           model_kwargs={"width": 6})  # fmt: skip
    assert read_meta(path).model == spec and read_meta(path).model_kwargs == {"width": 6}
    with pytest.raises(CheckpointError, match=r"running code.*pass --model"):
        load_checkpoint(path)
    loaded, _ = load_checkpoint(path, model=spec)
    x = torch.rand(3, 4)
    assert torch.equal(loaded(x), model.eval()(x))
    with pytest.raises(ConfigError, match="not a model_a"):
        load_checkpoint(path, model="model_a")


def test_plain_state_dicts_load_into_the_named_model(factory_file: Path, tmp_path: Path) -> None:
    spec = f"{factory_file}:tiny"
    model = models.build(spec).eval()
    x = torch.rand(3, 4)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "wrapped.pt")
    safetensors.torch.save_file(model.state_dict(), tmp_path / "w.safetensors")
    for name in ("w.pt", "wrapped.pt", "w.safetensors"):
        loaded, meta = load_weights(tmp_path / name, model=spec)
        assert torch.equal(loaded(x), model(x)) and meta.model == spec and not loaded.training
    with pytest.raises(
        CheckpointError, match=r"plain state dict .*pass model \(and model_kwargs\)"
    ):
        load_weights(tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=r"does not fit .* key '1.weight' has shape"):
        load_weights(tmp_path / "w.pt", model=spec, model_kwargs={"width": 3})
    with pytest.raises(CheckpointError, match="missing keys"):
        load_weights(tmp_path / "w.pt", model="model_a")
    torch.save({"w": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="never unpickles code"):
        load_weights(tmp_path / "evil.pt", model=spec)


def test_load_weights_of_an_lsakit_checkpoint_checks_model_and_args(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "a.safetensors", models.build("model_a"),
                           model_name="model_a", model_kwargs={})  # fmt: skip
    assert load_weights(path)[1].model == "model_a"
    with pytest.raises(ConfigError, match="holds a model_a"):
        load_weights(path, model="model_b")
    with pytest.raises(ConfigError, match="drop model_kwargs"):
        load_weights(path, model="model_a", model_kwargs={"hidden": 3})


@needs_transformers
def test_hf_model_returns_logits_and_its_checkpoint_stores_the_config(tmp_path: Path) -> None:
    directory = hf_dir(tmp_path)
    spec = f"hf:{directory}"
    model = models.build(spec, num_labels=3)
    assert isinstance(model, models.HFClassifier) and model.task == "image-classification"
    x = torch.rand(2, 3, 8, 8)
    assert model(x).shape == (2, 3)
    path = save_checkpoint(tmp_path / "vit.safetensors", model, model_name=spec,
                           model_kwargs={"num_labels": 3})  # fmt: skip
    meta = read_meta(path)
    assert meta.model_kwargs["task"] == "image-classification"
    assert meta.model_kwargs["config"]["hidden_size"] == 16
    (directory / "config.json").unlink()  # the checkpoint alone rebuilds it
    loaded, _ = load_checkpoint(path)
    assert torch.allclose(loaded(x), model.eval()(x))


@needs_transformers
def test_hf_state_dict_of_the_transformers_model_itself(tmp_path: Path) -> None:
    spec = f"hf:{hf_dir(tmp_path)}"
    model = models.build(spec).eval()
    assert isinstance(model, models.HFClassifier)
    safetensors.torch.save_file(model.model.state_dict(), tmp_path / "model.safetensors")
    loaded, _ = load_weights(tmp_path / "model.safetensors", model=spec)
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(loaded(x), model(x))


@needs_transformers
def test_hf_tasks_and_bad_arguments(tmp_path: Path) -> None:
    from transformers import BertConfig

    spec = f"hf:{hf_dir(tmp_path)}"
    with pytest.raises(ConfigError, match="no attribute 'num_lables'; did you mean"):
        models.build(spec, num_lables=3)
    with pytest.raises(ConfigError, match="unknown task 'x'"):
        models.build(spec, task="x")
    bert = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=16, num_labels=2)  # fmt: skip
    bert.save_pretrained(tmp_path / "bert")
    with pytest.raises(ConfigError, match="pass --model-arg task="):
        models.build(f"hf:{tmp_path / 'bert' / 'config.json'}")
    text = models.build(f"hf:{tmp_path / 'bert'}", task="text-classification").eval()
    embeds = torch.randn(2, 5, 8)
    ids = torch.randint(0, 30, (2, 5))
    assert text(embeds).shape == (2, 2) and text(ids).shape == (2, 2)
    remote = tmp_path / "remote.json"
    remote.write_text('{"model_type": "bert", "auto_map": {"AutoModel": "x.Y"}}')
    with pytest.raises(ConfigError, match="remote code"):
        models.build(f"hf:{remote}", task="sequence-classification")


@pytest.mark.skipif(
    not importable("timm"), reason="timm does not import here (needs timm and torchvision)"
)
def test_timm_and_torchvision_models_round_trip_without_naming_them(tmp_path: Path) -> None:
    for spec in ("timm:resnet18", "torchvision:resnet18"):
        model = models.build(spec, num_classes=2)
        path = save_checkpoint(tmp_path / "m.safetensors", model, model_name=spec,
                               model_kwargs={"num_classes": 2})  # fmt: skip
        loaded, meta = load_checkpoint(path)  # ecosystem models run no user code
        x = torch.rand(2, 3, 16, 16)
        assert meta.model == spec and torch.equal(loaded(x), model.eval()(x))
    with pytest.raises(ConfigError, match="did you mean resnet18"):
        models.resolve("timm:resnet1800")
    # weights are asked for in each ecosystem's own words (tests/test_pretrained.py loads them)
    with pytest.raises(ConfigError, match="'checkpoint_path' is not accepted; use pretrained=true"):
        models.build("timm:resnet18", checkpoint_path="w.pth")
    with pytest.raises(ConfigError, match="'pretrained' is not accepted; use weights=DEFAULT"):
        models.build("torchvision:resnet18", pretrained=True)
    with pytest.raises(
        ConfigError, match=r"unknown weights 'IMAGENET9'; did you mean IMAGENET1K_V1"
    ):
        models.build("torchvision:resnet18", weights="IMAGENET9")
    assert not models.resolve("torchvision:resnet18").pretrained({"num_classes": 2})
    assert models.resolve("torchvision:resnet18").pretrained({"weights": "DEFAULT"})
    assert models.resolve("timm:hf-hub:timm/resnet18.a1_in1k").pretrained({})
