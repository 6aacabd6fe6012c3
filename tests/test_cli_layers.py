"""The CLI's layer selections: printed names go back in, and --mvl-layers picks what LR targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import run_cli


def test_analyze_layers_by_type_and_train_mvl_on_those_layers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        ["--threads", "1", "train", "-d", "moons", "--epochs", "1", "--limit", "300",
         "--out", str(tmp_path / "normal")],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    checkpoint = tmp_path / "normal" / "model.safetensors"
    code, printed, err = run_cli(
        ["--threads", "1", "analyze", "-d", "moons", "--checkpoint", str(checkpoint),
         "-p", "fgsm=0.1", "--layers", "type:Linear", "--limit", "100",
         "--out", str(tmp_path / "lsa")],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    result = json.loads((tmp_path / "lsa" / "lsa.json").read_text())
    names = [layer["module_name"] for layer in result["layers"]]
    assert result["selection"] == ["type:Linear"] and names and all("fc" in n for n in names)
    code, printed, err = run_cli(
        ["--threads", "1", "train", "-d", "moons", "--method", "fgsm", "--epochs", "1",
         "--limit", "300", "--lr-layers", "mvl", "--mvl-checkpoint", str(checkpoint),
         "--mvl-layers", "type:Linear", "--eta", "-10", "--out", str(tmp_path / "lr")],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    # η = −10 lists every measured layer: the Linear outputs, by name, not the ReLUs' labels.
    assert f"MVL (η = -10) to regularize: {', '.join(names)}" in printed


def test_a_bad_layer_type_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["train", "-d", "moons", "--epochs", "1", "--limit", "100",
                            "--out", str(tmp_path / "n")], capsys)  # fmt: skip
    assert code == 0
    code, _, err = run_cli(
        ["analyze", "-d", "moons", "--checkpoint", str(tmp_path / "n" / "model.safetensors"),
         "-p", "fgsm=0.1", "--layers", "type:Conv9d", "--out", str(tmp_path / "a")],
        capsys,
    )  # fmt: skip
    assert code == 2 and "matches no module" in err and "Traceback" not in err


NETS = """
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x):
        return F.silu(self.fc(x))


class Net(nn.Module):  # activations called as functions only
    def __init__(self):
        super().__init__()
        self.fc1, self.block, self.fc3 = nn.Linear(2, 16), Block(), nn.Linear(16, 2)

    def forward(self, x):
        return self.fc3(self.block(F.relu(self.fc1(x))))


def net():
    return Net()
"""


def test_functional_activations_round_trip_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nets.py").write_text(NETS)
    common = ["-m", "nets.py:net", "-d", "moons"]
    code, _, err = run_cli(
        ["--threads", "1", "train", *common, "--epochs", "1", "--limit", "300", "--out", "n"],
        capsys,
    )
    assert code == 0, err
    analyze = ["--threads", "1", "analyze", *common, "--checkpoint", "n/model.safetensors",
               "-p", "fgsm=0.1", "--limit", "100"]  # fmt: skip
    code, printed, err = run_cli([*analyze, "--out", "all"], capsys)
    assert code == 0, err
    every = json.loads((tmp_path / "all" / "lsa.json").read_text())
    assert [la["module_name"] for la in every["layers"]] == [":relu#0", "block:silu#0"]
    code, _, err = run_cli([*analyze, "--layers", "block:silu#0", "--out", "one"], capsys)
    assert code == 0, err
    one = json.loads((tmp_path / "one" / "lsa.json").read_text())
    assert one["selection"] == ["block:silu#0"]
    assert (
        one["perturbations"][0]["layers"][0]["mean"]
        == every["perturbations"][0]["layers"][1]["mean"]
    )
    code, printed, err = run_cli(
        ["--threads", "1", "train", *common, "--method", "fgsm", "--epochs", "1", "--limit",
         "300", "--lr-layers", "block:silu#0", "--out", "lr"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "fgsm + LR on block:silu#0" in printed
    code, _, err = run_cli([*analyze, "--layers", "block:silu#1", "--out", "bad"], capsys)
    assert code == 2 and "block:silu#1 was not called" in err and "Traceback" not in err
