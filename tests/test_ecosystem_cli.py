"""The command line with models from the ecosystems and data of the user's (issue 11, items 4–5).

Tiny and fast: random weights, 8×8 / 16×16 inputs, a few images, one epoch where training is
the point. timm needs torchvision; its test skips (saying so) where timm does not import.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import importable
from helpers import run_cli as run
from lsakit import data
from lsakit.analysis import LSAResult
from lsakit.checkpoint import load_checkpoint, read_meta

FACTORY = """
from torch import nn

def tiny(*, side: int = 16, channels: int = 3, width: int = 8, classes: int = 2) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(channels * side * side, width), nn.ReLU(),
        nn.Linear(width, width), nn.Tanh(), nn.Linear(width, classes),
    )
"""


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes × 6 random 16×16 RGB PNGs."""
    root = tmp_path_factory.mktemp("pets")
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir()
        for i in range(6):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def factory_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("code") / "net.py"
    path.write_text(FACTORY)
    return path


@pytest.fixture(scope="module")
def image_tensors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 train + 10 test 3×8×8 images in [0, 1], 2 classes, as a .npz file."""
    path = tmp_path_factory.mktemp("tensors") / "images.npz"
    rng = np.random.default_rng(1)
    x = rng.random((50, 3, 8, 8)).astype(np.float32)
    y = np.arange(50) % 2
    np.savez(path, x=x[:40], y=y[:40], x_test=x[40:], y_test=y[40:])
    return path


def one_error_line(code: int, out: str, err: str) -> str:
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in out + err
    return lines[0]


# ------------------------------------------------------------------------------ end to end


def test_analyze_a_file_factory_on_an_image_folder(
    image_folder: Path, factory_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "lsa"
    spec = f"{factory_file}:tiny"
    args = ["analyze", "-m", spec, "--model-arg", "width=6", "-d", f"folder:{image_folder}",
            "-p", "gaussian=0.03", "-p", "pgd=0.03,steps=3", "--out", str(out_dir)]  # fmt: skip
    code, out, err = run(args, capsys)
    assert code == 0, err
    assert f"training {spec} normally on folder:{image_folder} first (10 epochs)" in " ".join(
        out.split()
    )
    result = LSAResult.load(out_dir / "lsa.json")
    assert [layer.module_name for layer in result.layers] == ["2", "4"]  # ReLU, Tanh
    assert result.n_samples == 2  # round(0.2 · 12) test images
    assert result.meta["model"] == spec and result.meta["model_kwargs"] == {"width": 6}
    meta = read_meta(out_dir / "model.safetensors")
    assert (meta.model, meta.model_kwargs, meta.extra["dataset"]) == (
        spec, {"width": 6}, f"folder:{image_folder}",
    )  # fmt: skip


@pytest.mark.skipif(
    not importable("timm"), reason="timm does not import here (it needs torchvision)"
)
def test_analyze_timm_resnet18_on_an_image_folder(
    image_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "lsa"
    args = ["analyze", "-m", "timm:resnet18", "--model-arg", "num_classes=2",
            "-d", f"folder:{image_folder}", "-p", "fgsm=0.03", "--out", str(out_dir)]  # fmt: skip
    code, _, err = run(args, capsys)
    assert code == 0, err
    result = LSAResult.load(out_dir / "lsa.json")
    assert len(result.layers) > 0 and result.meta["model"] == "timm:resnet18"
    # the run lsakit trained loads again from its checkpoint alone (no code of the user's runs)
    model, meta = load_checkpoint(out_dir / "model.safetensors")
    assert meta.model_kwargs == {"num_classes": 2}
    x, _ = data.load_tensors(f"folder:{image_folder}", "test")
    assert model(x).shape == (2, 2)
    code, _, err = run(["evaluate", "--checkpoint", str(out_dir / "model.safetensors"),
                        "--fgsm-eps", "0,0.03", "-a", "fgsm=0.03"], capsys)  # fmt: skip
    assert code == 0, err


@pytest.mark.skipif(not importable("transformers"), reason="needs lsakit[hf] (transformers)")
def test_train_hf_vit_on_a_tensor_file_then_evaluate_from_the_checkpoint_alone(
    image_tensors: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import ViTConfig

    ViTConfig(
        image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=32, num_labels=2,
        architectures=["ViTForImageClassification"],
    ).save_pretrained(tmp_path / "vit")  # fmt: skip
    run_dir = tmp_path / "run"
    code, out, err = run(["train", "-m", f"hf:{tmp_path / 'vit'}", "-d", str(image_tensors),
                          "--epochs", "1", "--batch-size", "16", "--out", str(run_dir)], capsys)  # fmt: skip
    assert code == 0, err
    assert "epoch 1/1" in out
    checkpoint = run_dir / "model.safetensors"
    meta = read_meta(checkpoint)
    assert meta.model_kwargs["config"]["hidden_size"] == 16
    (tmp_path / "vit" / "config.json").unlink()  # the checkpoint holds the config
    code, out, err = run(["evaluate", "--checkpoint", str(checkpoint), "--fgsm-eps", "0,0.03",
                          "-a", "pgd=0.03,steps=2", "--out", str(tmp_path / "ev")], capsys)  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    model, _ = load_checkpoint(checkpoint)
    x, y = data.load_tensors(str(image_tensors), "test")
    with torch.no_grad():
        expected = float((model(x).argmax(1) == y).float().mean())
    clean = report["fgsm"][0]
    assert clean["eps"] == 0 and clean["accuracy"] == pytest.approx(expected)
    assert report["n_samples"] == 10


def test_file_factory_round_trip_train_evaluate_and_plain_state_dicts(
    image_tensors: Path, factory_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = f"{factory_file}:tiny"
    run_dir = tmp_path / "run"
    factory_args = ["--model-arg", "side=8"]
    code, _, err = run(["train", "-m", spec, *factory_args, "-d", str(image_tensors),
                        "--epochs", "2", "--out", str(run_dir)], capsys)  # fmt: skip
    assert code == 0, err
    checkpoint = run_dir / "model.safetensors"
    # A checkpoint that builds its model with code loads only when that code is named.
    line = one_error_line(*run(["evaluate", "--checkpoint", str(checkpoint)], capsys))
    assert "running code" in line and f"--model {spec}" in line
    ev = ["--fgsm-eps", "0,0.05", "-a", "fgsm=0.05"]
    code, _, err = run(["evaluate", "--checkpoint", str(checkpoint), "-m", spec, *ev,
                        "--out", str(tmp_path / "a")], capsys)  # fmt: skip
    assert code == 0, err
    from_checkpoint = json.loads((tmp_path / "a" / "evaluation.json").read_text())
    # The same weights as a plain state dict (.pt, weights only) of the named model.
    model, _ = load_checkpoint(checkpoint, model=spec)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    code, _, err = run(["evaluate", "--checkpoint", str(tmp_path / "weights.pt"), "-m", spec,
                        *factory_args, "-d", str(image_tensors), *ev,
                        "--out", str(tmp_path / "b")], capsys)  # fmt: skip
    assert code == 0, err
    from_plain = json.loads((tmp_path / "b" / "evaluation.json").read_text())
    assert from_plain["fgsm"] == from_checkpoint["fgsm"]
    # analyze takes the plain state dict as well
    code, _, err = run(["analyze", "--checkpoint", str(tmp_path / "weights.pt"), "-m", spec,
                        *factory_args, "-d", str(image_tensors), "-p", "gaussian=0.05",
                        "--out", str(tmp_path / "c")], capsys)  # fmt: skip
    assert code == 0, err
    assert LSAResult.load(tmp_path / "c" / "lsa.json").n_samples == 10
    # weights that do not fit the model: one line naming the file and the keys
    line = one_error_line(*run(["evaluate", "--checkpoint", str(tmp_path / "weights.pt"),
                                "-m", spec, "-d", str(image_tensors)], capsys))  # fmt: skip
    assert "weights.pt does not fit model" in line and "'1.weight'" in line


def test_tensor_file_domain_option_reaches_the_run(
    factory_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "signed.safetensors"
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.random((30, 4)).astype(np.float32) * 2 - 1)
    import safetensors.torch

    safetensors.torch.save_file({"x": x, "y": torch.arange(30) % 2}, path)
    spec = f"{factory_file}:tiny"
    args = ["train", "-m", spec, "--model-arg", "side=2", "--model-arg", "channels=1",
            "-d", str(path), "--epochs", "1", "--out", str(tmp_path / "run")]  # fmt: skip
    line = one_error_line(*run(args, capsys))  # [-1, 1] data outside the default [0, 1]
    assert f"data file {path}, field 'x'" in line and "outside the declared input domain [0, 1]"
    code, _, err = run([*args, "--domain", "-1,1"], capsys)
    assert code == 0, err
    config = read_meta(tmp_path / "run" / "model.safetensors").extra["config"]
    assert config["data_options"] == {"domain": "-1,1"}
    code, _, err = run(["analyze", "--checkpoint", str(tmp_path / "run" / "model.safetensors"),
                        "-m", spec, "-d", str(path), "-p", "pgd=0.1,steps=2",
                        "--out", str(tmp_path / "lsa")], capsys)  # fmt: skip
    assert code == 0, err  # the recorded domain option is used again
    assert LSAResult.load(tmp_path / "lsa" / "lsa.json").meta["data_options"] == {"domain": "-1,1"}


# ------------------------------------------------------------------------------- bad input


def _bad_files(root: Path) -> dict[str, Path]:
    rng = np.random.default_rng(3)
    x = rng.random((12, 4)).astype(np.float32)
    y = np.arange(12) % 2
    cases = {
        "wrong_shape": {"x": x, "y": y[:5]},
        "wrong_dtype": {"x": (x * 10).astype(np.int64), "y": y},
        "label_range": {"x": x, "y": y - 1},
        "out_of_domain": {"x": x * 3, "y": y},
        "missing_y": {"x": x},
    }
    paths = {}
    for name, fields in cases.items():
        paths[name] = root / f"{name}.npz"
        np.savez(paths[name], **fields)  # type: ignore[arg-type]
    paths["garbage"] = root / "garbage.npz"
    paths["garbage"].write_bytes(b"no zip here")
    return paths


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("wrong_shape", "field 'y': has shape (5,), but 'x' has 12 samples"),
        ("wrong_dtype", "field 'x': has dtype torch.int64, not a float dtype"),
        ("label_range", "field 'y': has a negative label (-1)"),
        ("out_of_domain", "field 'x': has values in"),
        ("missing_y", "has no field 'y'"),
        ("garbage", "is not a readable .npz archive"),
    ],
)
def test_bad_data_files_give_one_line_naming_file_and_field(
    case: str, message: str, factory_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _bad_files(tmp_path)[case]
    args = ["train", "-m", f"{factory_file}:tiny", "-d", str(path), "--out", str(tmp_path / "o")]
    code, out, err = run(args, capsys)
    line = one_error_line(code, out, err)
    assert message in line and str(path) in line
    assert out == "" and not (tmp_path / "o").exists()  # failed before anything was printed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["analyze", "-d", "cifar10", "-m", "resnet18"], "unknown model 'resnet18'"),
        (["analyze", "-m", "tf:resnet"], "'tf' is not a model source"),
        (["train", "-m", "FACTORY:nope"], "has no factory 'nope'"),
        (["train", "-m", "nowhere/net.py:tiny"], "no Python file nowhere/net.py"),
        (["train", "-m", "hf:/no/such/dir"], "config.json"),
        (["train", "-d", "DATA"], "no model given; pass --model"),
        (["train", "-m", "FACTORY:tiny", "-d", "DATA", "--domain", "sideways"], "sideways"),
        (["train", "-m", "FACTORY:tiny", "-d", "DATA", "--data-option", "size=3"], "'size'"),
        (["analyze", "-m", "FACTORY:tiny", "-d", "folder:/no/such"], "does not exist"),
        (["analyze", "-m", "FACTORY:tiny", "--model-arg", "depth=3"], "does not take"),
        (["evaluate", "--checkpoint", "WEIGHTS", "-d", "DATA"], "pass --model"),
    ],
)
def test_bad_models_and_data_fail_before_anything_is_printed(
    args: list[str],
    message: str,
    factory_file: Path,
    image_tensors: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    weights = tmp_path / "w.safetensors"
    import safetensors.torch

    safetensors.torch.save_file({"w": torch.zeros(2)}, weights)
    swap = {"FACTORY": str(factory_file), "DATA": str(image_tensors), "WEIGHTS": str(weights)}
    args = [swap.get(a.split(":")[0], a.split(":")[0]) + a[len(a.split(":")[0]) :] for a in args]
    code, out, err = run([*args, "--out", str(tmp_path / "o")], capsys)
    assert message in one_error_line(code, out, err)
    assert out == "" and not (tmp_path / "o").exists()


def test_a_missing_package_is_one_line_naming_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    line = one_error_line(*run(["analyze", "-m", "timm:resnet18", "--out", str(tmp_path)], capsys))
    assert "needs the timm package, which is not installed: pip install 'lsakit[timm]'" in line
    if not importable("torchvision"):
        line = one_error_line(*run(["train", "-m", "torchvision:resnet18"], capsys))
        assert "needs the torchvision package" in line and "pip install torchvision" in line
