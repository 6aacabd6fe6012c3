"""Crash safety with real processes: SIGKILL mid-training and mid-write, tampered files, NaN loss.

Every fault here is injected into a separate ``python -m lsakit`` (or ``python -c``) process and
checked from the outside, the way a user meets it: the run resumes to exactly the uninterrupted
result, a killed writer leaves the old file or the new one (never a torn one), and a damaged file
gives one ``error: …`` line naming it, with exit code 2.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch

from lsakit.checkpoint import load_checkpoint, read_meta

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

EPOCHS = 10  # room for the kill points below even on a loaded machine
TRAIN = ["train", "-d", "moons", "--epochs", str(EPOCHS), "--limit", "512"]


def _env() -> dict[str, str]:
    # One thread per process (a shared 2-core machine), unbuffered so "epoch k/" lines arrive live.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def lsakit(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m lsakit --threads 1 ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "lsakit", "--threads", "1", *args],
        cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _spawn(argv: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _kill_after_line(proc: subprocess.Popen[str], needle: str, delay: float) -> list[str]:
    """Read ``proc``'s output up to a line containing ``needle``, wait ``delay`` s, SIGKILL it.

    Returns every line it printed, including those printed during the delay.
    """
    assert proc.stdout is not None
    seen: list[str] = []
    for line in proc.stdout:
        seen.append(line)
        if needle in line:
            break
    else:
        raise AssertionError(f"process ended before printing {needle!r}:\n{''.join(seen)}")
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    seen.extend(proc.stdout)  # what it printed while we waited
    return seen


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


def _records(run: Path) -> list[dict[str, object]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


def _assert_same_tensors(a: Path, b: Path) -> None:
    left, right = safetensors.torch.load_file(a), safetensors.torch.load_file(b)
    assert left.keys() == right.keys()
    for name in left:
        assert torch.equal(left[name], right[name]), f"{a.name}: {name} differs"


# ---------------------------------------------------------------------------------------------
# 1. SIGKILL during training, then --resume
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("whole")
    done = lsakit(*TRAIN, "--out", str(root / "run"), cwd=root)
    assert done.returncode == 0, done.stderr
    return root / "run"


# Kill points: after the "epoch k/" line of epoch k (printed once epoch k's files are written),
# plus a seeded random delay, so the kill lands in epoch k+1's steps, its validation, or among its
# checkpoint / metrics / state writes.
# An epoch here lasts 15–50 ms on an idle machine (measured), so the random delays stay below
# that: the kill lands in the next epoch, wherever in it, however fast the machine.
KILLS = [(2, random.Random(11).uniform(0.0, 0.015)), (4, random.Random(12).uniform(0.0, 0.015)),
         (6, 0.0)]  # fmt: skip


@pytest.mark.slow  # end to end: three killed CLI runs resumed, against a whole one
@pytest.mark.parametrize(("after_epoch", "delay"), KILLS, ids=[f"epoch{e}" for e, _ in KILLS])
def test_sigkill_then_resume_equals_an_uninterrupted_run(
    tmp_path: Path, uninterrupted: Path, after_epoch: int, delay: float
) -> None:
    run = tmp_path / "run"
    proc = _spawn([sys.executable, "-m", "lsakit", "--threads", "1", *TRAIN, "--out", str(run)],
                  tmp_path)  # fmt: skip
    _kill_after_line(proc, f"epoch {after_epoch}/{EPOCHS}", delay)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert len(_records(run)) < EPOCHS  # really cut short

    resumed = lsakit("train", "--resume", str(run), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming" in resumed.stdout
    assert _records(run) == _records(uninterrupted)
    assert [r["epoch"] for r in _records(run)] == list(range(1, EPOCHS + 1))
    _assert_same_tensors(run / "model.safetensors", uninterrupted / "model.safetensors")
    _assert_same_tensors(run / "best.safetensors", uninterrupted / "best.safetensors")
    assert read_meta(run / "model.safetensors").extra["epoch"] == EPOCHS


# ---------------------------------------------------------------------------------------------
# 2. SIGKILL in the middle of an atomic write
# ---------------------------------------------------------------------------------------------
# model_a with hidden=1500: 6.8 M parameters, a 27 MB file, so most of the loop is spent writing.
SAVE_LOOP = """
import sys, torch
torch.set_num_threads(1)
from lsakit import models
from lsakit.checkpoint import save_checkpoint
model = models.build("model_a", hidden=1500)
for i in range(1, 10_000):
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float(i))
    print("saving", i, flush=True)
    save_checkpoint(sys.argv[1], model, model_name="model_a", model_kwargs={"hidden": 1500},
                    extra={"i": i})
    print("saved", i, flush=True)
"""

JSON_LOOP = """
import json, sys
from lsakit._io import atomic_write

def payload(i):
    # 4 MB of JSON whose every value says which write it belongs to.
    return json.dumps({"format": 1, "i": i, "values": [i] * 1_000_000})

def write_slowly(text):
    def write(tmp):
        with open(tmp, "w") as f:
            for start in range(0, len(text), 65536):
                f.write(text[start : start + 65536])
                f.flush()
    return write

for i in range(1, 10_000):
    atomic_write(sys.argv[1], write_slowly(payload(i)))
    print("saved", i, flush=True)
"""


def _kill_writer(
    tmp_path: Path,
    script: str,
    target: Path,
    after: int,
    delay: float,
    needle: str | None = None,
) -> tuple[int, list[Path]]:
    """Run the writing loop, SIGKILL it after ``after`` saves + ``delay`` s (or right after the
    line ``needle``); (last saved, temps)."""
    proc = _spawn([sys.executable, "-c", script, str(target)], tmp_path)
    seen = _kill_after_line(proc, needle or f"saved {after}\n", delay)
    assert proc.returncode == -signal.SIGKILL
    # Unbuffered, print writes "saved", " ", "3", "\n" one by one: a kill between them leaves a
    # partial last line, which is no completed save.
    last = max(int(m.group(1)) for line in seen if (m := re.fullmatch(r"saved (\d+)\n", line)))
    temps = [p for p in target.parent.iterdir() if p != target]
    return last, temps


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.13])
def test_sigkill_during_save_checkpoint_leaves_the_old_or_the_new_file(
    tmp_path: Path, delay: float
) -> None:
    target = tmp_path / "ck" / "model.safetensors"
    last, temps = _kill_writer(tmp_path, SAVE_LOOP, target, after=2, delay=delay)
    model, meta = load_checkpoint(target)  # never torn
    i = meta.extra["i"]
    assert i in (last, last + 1)
    for name, tensor in model.state_dict().items():
        assert torch.all(tensor == float(i)), f"{name} holds values of another write"
    # A write the kill interrupted stays behind as a hidden temporary, never under the target's
    # name; loading it is refused or gives a whole older/newer checkpoint, never a torn one.
    for temp in temps:
        # ours (atomic_write) or the safetensors writer's own temporary inside it
        assert temp.name.startswith((".model.safetensors.tmp-", ".tmp")), temp.name
        assert temp.suffix != ".safetensors"


#: The save loop with a writer that stops half-way through the third checkpoint's bytes and says
#: so: a kill then lands inside the write for certain, whatever the machine's load.
TORN_SAVE_LOOP = (
    """
import time
import safetensors.torch
from lsakit import checkpoint

def half_then_wait(tensors, path, metadata=None):
    data = safetensors.torch.save(tensors, metadata=metadata)
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
    if metadata and '"i": 3' in metadata.get("lsakit", ""):
        print("half-written 3", flush=True)
        time.sleep(60)
    with open(path, "wb") as f:
        f.write(data)

checkpoint.safetensors.torch.save_file = half_then_wait
"""
    + SAVE_LOOP
)


def test_a_kill_inside_a_checkpoint_write_leaves_the_previous_checkpoint(tmp_path: Path) -> None:
    """The kill window is really exercised: the third save is killed with half its bytes written."""
    target = tmp_path / "ck" / "model.safetensors"
    last, temps = _kill_writer(tmp_path, TORN_SAVE_LOOP, target, 2, 0.0, needle="half-written 3")
    assert last == 2
    model, meta = load_checkpoint(target)
    assert meta.extra["i"] == 2  # the previous checkpoint, whole
    assert all(torch.all(t == 2.0) for t in model.state_dict().values())
    assert len(temps) == 1 and temps[0].name.startswith(".model.safetensors.tmp-")
    with pytest.raises(safetensors.SafetensorError):  # the torn temporary does not parse
        safetensors.torch.load_file(temps[0])


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.09])
def test_sigkill_during_atomic_write_leaves_whole_json(tmp_path: Path, delay: float) -> None:
    target = tmp_path / "out" / "evaluation.json"
    last, temps = _kill_writer(tmp_path, JSON_LOOP, target, after=1, delay=delay)
    data = json.loads(target.read_text())  # parses: old or new, never half
    assert data["i"] in (last, last + 1)
    assert len(data["values"]) == 1_000_000 and set(data["values"]) == {data["i"]}
    for temp in temps:
        assert temp.name.startswith(".evaluation.json.tmp-"), temp.name


# ---------------------------------------------------------------------------------------------
# 3. Tampered / truncated files through the CLI: exit 2, one error line naming the file
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(uninterrupted: Path) -> Path:
    return uninterrupted / "model.safetensors"


def _damaged(tmp_path: Path, source: Path, how: str) -> Path:
    data = bytearray(source.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "header-cut":
        data = data[:20]
    elif how == "metadata-tampered":
        start = data.index(b'"format_version')
        data[start : start + 15] = b'"format_versioX'  # still valid JSON, but not lsakit's
    elif how == "zeroed":
        data = bytearray(len(data))
    target = tmp_path / f"{how}.safetensors"
    target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize("how", ["truncated", "header-cut", "metadata-tampered", "zeroed"])
@pytest.mark.parametrize("command", ["evaluate", "analyze"])
def test_damaged_checkpoint_gives_one_error_line(
    tmp_path: Path, checkpoint: Path, how: str, command: str
) -> None:
    bad = _damaged(tmp_path, checkpoint, how)
    args = ["--checkpoint", str(bad), "--out", str(tmp_path / "o")]
    if command == "evaluate":
        result = lsakit("evaluate", *args, "-a", "fgsm=0.1", cwd=tmp_path)
    else:
        result = lsakit("analyze", "-d", "moons", *args, "-p", "gaussian=0.1", "--limit", "20",
                        cwd=tmp_path)  # fmt: skip
    line = _one_error_line(result)
    assert str(bad) in line
    assert not (tmp_path / "o").exists()  # nothing written


def test_truncated_resume_state_and_config_give_one_error_line(
    tmp_path: Path, uninterrupted: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.yaml", "state.pt", "model.safetensors", "metrics.jsonl"):
        (run / name).write_bytes((uninterrupted / name).read_bytes())
    state = run / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    line = _one_error_line(lsakit("train", "--resume", str(run), cwd=tmp_path))
    assert str(state) in line and "start the run anew" in line

    config = run / "config.yaml"
    config.write_text("model: model_a\ndataset: moons\nepochs: [6\n")
    line = _one_error_line(lsakit("train", "--resume", str(run), cwd=tmp_path))
    assert str(config) in line


def test_truncated_suite_state_gives_one_error_line(tmp_path: Path, checkpoint: Path) -> None:
    state = tmp_path / "suite.state.json"
    state.write_text('{"format": 1, "attack": 0, "done"')  # a write cut short
    result = lsakit(
        "evaluate", "--checkpoint", str(checkpoint), "--suite", "standard", "--eps", "0.1",
        "--n-examples", "8", "--state", str(state), "--out", str(tmp_path / "o"), cwd=tmp_path,
    )  # fmt: skip
    line = _one_error_line(result)
    assert str(state) in line


@pytest.mark.parametrize("kind", ["lsa", "evaluation"])
def test_truncated_or_tampered_results_files_name_the_file(tmp_path: Path, kind: str) -> None:
    """lsa.json and evaluation.json are read by the API (no CLI command reads them back)."""
    from lsakit.analysis import LSAResult
    from lsakit.errors import ResultsError
    from lsakit.evaluate import EvaluationResult

    cls = LSAResult if kind == "lsa" else EvaluationResult
    path = tmp_path / f"{kind}.json"
    for text in ('{"format": 1, "n_samp', "[1, 2, 3]", '{"format": 99}', "\x00\x01garbage"):
        path.write_text(text)
        with pytest.raises(ResultsError) as info:
            cls.load(path)
        message = str(info.value)
        assert str(path) in message and "\n" not in message, message


def _fake_mnist(root: Path, n: int = 64) -> Path:
    def idx(array: np.ndarray) -> bytes:
        header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
        return header + array.astype(np.uint8).tobytes()

    rng = np.random.default_rng(0)
    folder = root / "mnist"
    folder.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx(labels)))
    return folder


@pytest.mark.parametrize("cut", ["gzip-stream", "idx-payload"])
def test_truncated_idx_file_gives_one_error_line(tmp_path: Path, cut: str) -> None:
    folder = _fake_mnist(tmp_path / "data")
    images = folder / "train-images-idx3-ubyte.gz"
    if cut == "gzip-stream":
        images.write_bytes(images.read_bytes()[:-200])
    else:  # a well-formed gzip of an IDX file missing its tail
        images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:-500]))
    result = lsakit("train", "-d", "mnist", "--data-dir", str(tmp_path / "data"), "--epochs", "1",
                    "--out", str(tmp_path / "run"), cwd=tmp_path)  # fmt: skip
    line = _one_error_line(result)
    assert str(images) in line


# ---------------------------------------------------------------------------------------------
# 4. A NaN loss through the CLI
# ---------------------------------------------------------------------------------------------
def test_nan_loss_stops_with_epoch_and_step_and_keeps_the_last_good_epoch(tmp_path: Path) -> None:
    # SGD at lr 1 on a cyclic schedule: epoch 1 (lr rising from 0) is fine, epoch 2 diverges.
    run = tmp_path / "run"
    result = lsakit("train", "-d", "moons", "--epochs", "4", "--limit", "512", "--optimizer",
                    "sgd", "--schedule", "cyclic", "--lr", "1", "--out", str(run), cwd=tmp_path)  # fmt: skip
    line = _one_error_line(result)
    assert "epoch 2, step" in line and ("nan" in line or "inf" in line), line
    assert "epoch 1/4" in result.stdout
    model, meta = load_checkpoint(run / "model.safetensors")
    assert meta.extra["epoch"] == 1
    assert all(bool(torch.isfinite(t).all()) for t in model.state_dict().values())
    assert [r["epoch"] for r in _records(run)] == [1]
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["epoch"] == 1
    for name, tensor in state["model"].items():
        assert torch.equal(tensor, model.state_dict()[name]), name
