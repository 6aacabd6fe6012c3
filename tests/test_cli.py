"""End-to-end tests of the command line on small real data (Moon; real MNIST where present)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import run_cli as run
from lsakit.analysis import LSAResult
from lsakit.checkpoint import read_meta
from lsakit.cli import main


@pytest.fixture(scope="module")
def moon_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model A trained normally on Moon, through the CLI (in a subprocess: the real entry point)."""
    run_dir = tmp_path_factory.mktemp("train")
    cmd = [sys.executable, "-m", "lsakit", "train", "--dataset", "moons", "--epochs", "20",
           "--out", str(run_dir)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "epoch 20/20" in done.stdout
    return run_dir / "model.safetensors"


def test_models_and_datasets_are_listed(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["models"], capsys)
    assert code == 0
    for name in ("model_a", "model_b", "vgg19", "wrn", "preact_resnet18"):
        assert name in out
    assert "20,702" in out and "123,222" in out  # exact parameter counts of models A and B
    code, out, _ = run(["datasets"], capsys)
    assert code == 0
    for name in ("moons", "mnist", "fashion-mnist", "cifar10"):
        assert name in out


def test_train_writes_checkpoint_and_metrics(moon_checkpoint: Path) -> None:
    meta = read_meta(moon_checkpoint)
    assert meta.model == "model_a" and meta.extra["dataset"] == "moons"
    lines = (moon_checkpoint.parent / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == list(range(1, 21))
    assert records[-1]["test_accuracy"] >= 0.95


def test_analyze_prints_table_and_mvl_and_writes_outputs(
    moon_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "lsa"
    args = ["analyze", "--checkpoint", str(moon_checkpoint), "-p", "gaussian=0.03",
            "-p", "fgsm=0.03", "-p", "pgd=0.03,steps=10", "--eta", "0.5", "--out", str(out_dir)]  # fmt: skip
    code, out, err = run(args, capsys)
    assert code == 0, err
    assert "MVL (pgd, η = 0.5)" in out and "elu3" in out
    result = LSAResult.load(out_dir / "lsa.json")
    assert result.names() == ["gaussian", "fgsm", "pgd"]
    assert [layer.module_name for layer in result.layers] == ["elu1", "elu2", "elu3"]
    assert result.n_samples == 500
    pgd, gauss = result.perturbation("pgd"), result.perturbation("gaussian")
    assert pgd.accuracy is not None and result.clean_accuracy is not None
    assert pgd.accuracy < result.clean_accuracy
    assert result.meta["mvl"]["layers"] == [
        la.label for la in result.most_vulnerable_layers(0.5, "pgd")
    ]
    assert gauss.adversarial is False and pgd.adversarial is True
    png = (out_dir / "lsa.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["analyze", "--model", "resnet9000"], "unknown model 'resnet9000'"),
        (["analyze", "--dataset", "imagenet"], "no preset for data set 'imagenet'"),
        (["analyze", "-p", "gaussain=0.1"], "did you mean 'gaussian'"),
        (["analyze", "-p", "gaussian=-1"], "std"),
        (["analyze", "-p", "pgd=0.1,stepz=3"], "stepz"),
        (["analyze", "--checkpoint", "nowhere.safetensors"], "nowhere.safetensors"),
        (["analyze", "--measure", "l3"], "unknown measure"),
        (["train", "--epochs", "0"], "--epochs"),
        (["train", "--optimizer", "rmsprop"], "--optimizer"),
        (["analyze", "--device", "tpu"], "device"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run([*args, "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert message in lines[0]
    assert "Traceback" not in err + out


def test_corrupt_checkpoint_and_unknown_layer(
    moon_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(os.urandom(300))
    code, _, err = run(["analyze", "--checkpoint", str(bad), "--out", str(tmp_path)], capsys)
    assert code == 2 and "bad.safetensors" in err and "Traceback" not in err
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(moon_checkpoint.read_bytes()[:-100])
    code, _, err = run(["analyze", "--checkpoint", str(truncated), "--out", str(tmp_path)], capsys)
    assert code == 2 and "cut.safetensors" in err
    code, _, err = run(
        [
            "analyze",
            "--checkpoint",
            str(moon_checkpoint),
            "--layers",
            "elu",
            "--out",
            str(tmp_path),
        ],
        capsys,
    )
    assert code == 2 and "unknown layer 'elu'" in err and "elu1" in err


def test_wrong_dataset_for_checkpoint(
    moon_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        ["analyze", "--checkpoint", str(moon_checkpoint), "--dataset", "mnist"], capsys
    )
    assert code == 2 and "trained on moons" in err


def test_failed_run_leaves_existing_results_untouched(
    moon_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "keep"
    args = [
        "analyze",
        "--checkpoint",
        str(moon_checkpoint),
        "-p",
        "gaussian=0.03",
        "--out",
        str(out_dir),
    ]
    assert run(args, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    code, _, _ = run([*args[:-2], "--layers", "nope", "--out", str(out_dir)], capsys)
    assert code == 2
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    from lsakit.errors import ConfigError

    with pytest.raises(ConfigError):
        main(["--debug", "analyze", "--model", "resnet9000"])


@pytest.mark.slow
def test_mnist_end_to_end_on_real_data(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Train model B briefly on 3000 real MNIST images, then LSA on 300 test images."""
    common = ["--dataset", "mnist", "--data-dir", str(shared_data)]
    code, _, err = run(
        [
            "train",
            *common,
            "--limit",
            "3000",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--out",
            str(tmp_path / "t"),
        ],
        capsys,
    )
    assert code == 0, err
    code, _, err = run(
        ["analyze", *common, "--checkpoint", str(tmp_path / "t" / "model.safetensors"),
         "--limit", "300", "-p", "gaussian=0.3", "-p", "pgd=0.3,steps=10,alpha=0.05",
         "--out", str(tmp_path / "a")],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    result = LSAResult.load(tmp_path / "a" / "lsa.json")
    assert [la.module_name for la in result.layers] == ["relu1", "relu2", "relu3", "relu4"]
    assert result.clean_accuracy is not None and result.clean_accuracy > 0.8
    gauss, pgd = result.perturbation("gaussian").means(), result.perturbation("pgd").means()
    assert all(p is not None and g is not None and p > g for p, g in zip(pgd, gauss, strict=True))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--limit", "0"], "--limit must be an integer ≥ 1, got 0"),
        (["--batch-size", "0"], "--batch-size must be an integer ≥ 1, got 0"),
        (["--split", "valid"], "--split must be train or test"),
    ],
)
def test_analyze_checks_its_options_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, _, err = run(["analyze", "--out", str(tmp_path / "out"), *extra], capsys)
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


def test_train_refuses_a_directory_holding_a_run_unless_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--dataset", "moons", "--epochs", "1", "--out", str(tmp_path)]
    assert run(args, capsys)[0] == 0
    model = (tmp_path / "model.safetensors").read_bytes()
    code, out, err = run([*args, "--seed", "3"], capsys)
    assert code == 2
    assert out == ""  # refused before anything is printed (no "training … →" header first)
    assert err.count("\n") == 1 and "already holds a training run" in err and "--overwrite" in err
    assert "Traceback" not in err
    assert (tmp_path / "model.safetensors").read_bytes() == model
    code, _, err = run([*args, "--seed", "3", "--overwrite"], capsys)
    assert code == 0, err
    assert (tmp_path / "model.safetensors").read_bytes() != model
    assert read_meta(tmp_path / "model.safetensors").extra["config"]["seed"] == 3


def test_resuming_a_finished_run_says_so_and_epochs_extend_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    args = ["train", "--epochs", "1", "--data-option", "n_samples=300", "--out", str(run_dir)]
    assert run(args, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    code, out, err = run(["train", "--resume", str(run_dir)], capsys)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{run_dir} is already complete (1/1 epochs); nothing to resume — use --epochs N to "
        f"extend it, or start it over with lsakit train --config {run_dir / 'config.yaml'} "
        f"--out {run_dir} --overwrite"
    ]
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before  # nothing touched
    code, out, err = run(["train", "--resume", str(run_dir), "--epochs", "2"], capsys)
    assert code == 0, err
    assert f"resuming at epoch 2/2: model_a on moons with standard → {run_dir}" in out
    assert "epoch 2/2" in out and "epoch 1/" not in out
    assert [r["epoch"] for r in map(json.loads, (run_dir / "metrics.jsonl").open())] == [1, 2]
    assert read_meta(run_dir / "model.safetensors").extra["config"]["epochs"] == 2
    assert "epochs: 2" in (run_dir / "config.yaml").read_text()
    code, _, err = run(["train", "--resume", str(run_dir), "--epochs", "1"], capsys)
    assert code == 2 and "has trained 2 epochs already; --epochs 1 would shorten it" in err
    code, _, err = run(["train", "--resume", str(run_dir), "--lr", "0.1"], capsys)
    assert code == 2 and "drop --lr" in err


def test_the_training_line_names_the_regularizer_and_the_learning_rate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--epochs", "1", "--method", "fgsm", "--lr-layers", "L2",
            "--data-option", "n_samples=300", "--out", str(tmp_path)]  # fmt: skip
    code, out, err = run(args, capsys)
    assert code == 0, err
    [line] = [line for line in out.splitlines() if line.startswith("epoch 1/1")]
    assert ", reg " in line and ", lr 0.01," in line and "LR" not in line


@pytest.mark.slow
def test_resume_finds_the_data_directory_the_run_was_trained_with(
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A run trained with --data-dir resumes with no flags: state.pt records the directory (no
    download into $LSAKIT_DATA, which is empty here)."""
    from helpers import Interrupted
    from lsakit.config import train_config
    from lsakit.train import train

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("LSAKIT_DATA", str(empty))
    config = train_config({"dataset": "mnist", "epochs": 2, "limit": 600, "test_limit": 200})
    run_dir = tmp_path / "run"

    def stop_after_first(epoch: int, record: dict[str, object]) -> None:
        if epoch == 1:
            raise Interrupted  # as a crash after epoch 1 would

    with pytest.raises(Interrupted):
        train(config, run_dir, data_dir=shared_data, on_epoch_end=stop_after_first)
    code, out, err = run(["--threads", "1", "train", "--resume", str(run_dir)], capsys)
    assert code == 0, err
    assert "resuming at epoch 2/2" in out and "epoch 2/2:" in out
    assert list(empty.iterdir()) == []  # nothing was downloaded
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    assert [r["epoch"] for r in records] == [1, 2]
