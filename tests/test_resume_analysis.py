"""A resumable analysis: killed part-way, continued from its state file, the same result.

The fast tests interrupt ``lsakit.analyze`` from Python (an exception in a perturbation, as
Ctrl-C would) and resume it; the slow ones send SIGKILL to a real ``lsakit analyze`` process —
alone and under torchrun with two ranks — and compare the resumed ``lsa.json`` with that of an
uninterrupted run, byte for byte.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lsakit import analyze
from lsakit.errors import ConfigError
from lsakit.perturb import PGD, GaussianNoise

BIN = Path(sys.executable).parent


class Interrupted(Exception):
    pass


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 16), nn.ELU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))


def _loader() -> DataLoader[Any]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(200, 2, generator=g)
    return DataLoader(TensorDataset(x, (x[:, 0] > x[:, 1]).long()), batch_size=20)


def _perturbations(model: nn.Module, stop_at: int | None = None) -> dict[str, Any]:
    """Unseeded noise (torch's global generator), seeded noise (its own generator) and PGD with
    random starts from the global generator; the first raises on call ``stop_at``."""
    calls = [0]
    noise = GaussianNoise(std=0.1)

    def unseeded(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == stop_at:
            raise Interrupted
        return noise(x, y)

    return {
        "unseeded": unseeded,
        "seeded": GaussianNoise(std=0.05, seed=3),
        "pgd": PGD(model, eps=0.1, steps=3),
    }


def test_an_interrupted_analysis_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    model = _model()
    torch.manual_seed(7)
    whole = analyze(model, _loader(), _perturbations(model))
    state = tmp_path / "lsa.state.json"
    torch.manual_seed(7)
    with pytest.raises(Interrupted):
        analyze(model, _loader(), _perturbations(model, stop_at=7), state_path=state)
    assert json.loads(state.read_text())["done"] == 6  # batches 1–6 completed, the 7th not
    torch.manual_seed(99)  # the saved random state decides the rest, not the caller's
    resumed = analyze(model, _loader(), _perturbations(model), state_path=state)
    assert resumed.model_dump_json() == whole.model_dump_json()
    assert resumed.n_samples == 200
    # A finished state gives the result again without another batch.
    again = analyze(model, _loader(), _perturbations(model, stop_at=1), state_path=state)
    assert again.model_dump_json() == whole.model_dump_json()


def test_a_state_of_other_settings_is_refused(tmp_path: Path) -> None:
    model = _model()
    state = tmp_path / "s.json"
    with pytest.raises(Interrupted):
        analyze(model, _loader(), _perturbations(model, stop_at=3), state_path=state)
    before = state.read_bytes()
    other = {**_perturbations(model), "pgd": PGD(model, eps=0.2, steps=3)}
    with pytest.raises(ConfigError, match=r"written with other perturbations .* delete the file"):
        analyze(model, _loader(), other, state_path=state)
    with pytest.raises(ConfigError, match="other measure"):
        analyze(model, _loader(), _perturbations(model), measure="mse", state_path=state)
    with torch.no_grad():
        model[0].bias.add_(1.0)
    with pytest.raises(ConfigError, match="other the model's weights"):
        analyze(model, _loader(), _perturbations(model), state_path=state)
    assert state.read_bytes() == before  # refused before any batch: the state is kept
    state.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read the analysis state"):
        analyze(model, _loader(), _perturbations(model), state_path=state)


def test_resume_refuses_what_it_cannot_continue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers import run_cli

    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(["analyze", "--resume", str(empty)], capsys)
    assert code == 2 and "holds no interrupted analysis (lsa.state.json is missing)" in err
    (empty / "lsa.json").write_text("{}")
    code, _, err = run_cli(["analyze", "--resume", str(empty)], capsys)
    assert code == 2 and "holds a finished analysis (lsa.json); nothing to resume" in err
    code, _, err = run_cli(["analyze", "--resume", str(empty), "--limit", "5"], capsys)
    assert code == 2 and "drop --limit" in err and "Traceback" not in err
    assert sorted(p.name for p in empty.iterdir()) == ["lsa.json"]  # nothing written


# -- real processes, SIGKILL ----------------------------------------------------------------
def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE"))}
    return {**env, "OMP_NUM_THREADS": "1"}


def _launcher(ranks: int) -> list[str]:
    if ranks == 1:
        return [str(BIN / "lsakit"), "--threads", "1"]
    return [str(BIN / "torchrun"), "--standalone", f"--nproc_per_node={ranks}", "-m", "lsakit",
            "--threads", "1"]  # fmt: skip


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, read from /proc (children before their parents are killed)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("moons")
    subprocess.run(
        [str(BIN / "lsakit"), "--threads", "1", "train", "-d", "moons", "--epochs", "1",
         "--limit", "300", "--out", str(out)],
        check=True, capture_output=True, env=_env(),
    )  # fmt: skip
    return out / "model.safetensors"


@pytest.mark.slow  # three real analyses of 20 batches each, one of them killed
@pytest.mark.parametrize("ranks", [1, 2])
def test_a_killed_lsakit_analyze_resumes_to_the_same_lsa_json(
    checkpoint: Path, tmp_path: Path, ranks: int
) -> None:
    def command(out: Path) -> list[str]:
        return [*_launcher(ranks), "analyze", "-d", "moons", "--checkpoint", str(checkpoint),
                "-p", "gaussian=0.1", "-p", "pgd=0.1,steps=300", "--batch-size", "20",
                "--limit", "400", "--out", str(out)]  # fmt: skip

    whole, cut = tmp_path / "whole", tmp_path / "cut"
    subprocess.run(command(whole), check=True, capture_output=True, env=_env())
    process = subprocess.Popen(
        command(cut), env=_env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    state = cut / "lsa.state.json"
    states = [state, *([cut / "lsa.state.json.rank1"] if ranks == 2 else [])]

    def done_by_each_rank() -> list[int]:
        done = []
        for path in states:
            try:
                done.append(json.loads(path.read_text())["done"])
            except (FileNotFoundError, ValueError, KeyError):
                done.append(0)
        return done

    done = done_by_each_rank()
    deadline = time.monotonic() + 300
    # rank 0 has done 3 of its batches and every other rank at least one (on busy cores a rank
    # can start well after rank 0; killed before its first batch, it would have no state yet)
    while (done[0] < 3 or min(done) < 1) and time.monotonic() < deadline:
        assert process.poll() is None, "the analysis ended before it could be killed"
        time.sleep(0.05)
        done = done_by_each_rank()
    for pid in [process.pid, *_descendants(process.pid)]:  # torchrun's workers have own sessions
        os.kill(pid, signal.SIGKILL)
    process.wait()
    assert done[0] >= 3 and min(done) >= 1 and not (cut / "lsa.json").exists()
    assert (cut / "lsa.state.json.rank1").exists() == (ranks == 2)  # each rank its own state
    total = 20 // ranks
    assert json.loads(state.read_text())["done"] < total
    resumed = subprocess.run(
        [*_launcher(ranks), "analyze", "--resume", str(cut)],
        capture_output=True, text=True, env=_env(),
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming the analysis in" in " ".join(resumed.stdout.split())
    assert (cut / "lsa.json").read_text() == (whole / "lsa.json").read_text()
    assert not list(cut.glob("lsa.state.json*"))  # finished: nothing left to resume
