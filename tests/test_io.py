from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lsakit._io import atomic_write, atomic_write_text


def test_atomic_write_gives_the_mode_of_a_plain_open(tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a" / "report.html", "<p>hi</p>")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text() == "<p>hi</p>"


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "r.json", "old")

    def boom(tmp: Path) -> None:
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, boom)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


# ---------------------------------------------------------------------------------------------
# Temporaries left by killed writers are removed by the next successful write of the same target
# ---------------------------------------------------------------------------------------------
def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_the_next_write_removes_only_stale_temps_of_its_own_target(tmp_path: Path) -> None:
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    kept = [
        ".other.tmp-abc",  # another target's temporary
        "model.safetensors.tmp-x",  # no leading dot: a user's file, not a temporary
        ".model.safetensors.tmp-x.tmp-abcdefgh",  # a temporary of target "model.safetensors.tmp-x"
        ".model.safetensors.tmpabc",  # not our prefix
        ".model.safetensors",
    ]
    for name in [".model.safetensors.tmp-abc", ".model.safetensors.tmp-k2_9zq0u", *kept]:
        (tmp_path / name).write_bytes(b"leftover")
    (tmp_path / ".model.safetensors.tmp-dir").mkdir()  # not a file: kept
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / ".model.safetensors.tmp-abc").write_bytes(b"another directory's")

    atomic_write(target, lambda tmp: tmp.write_bytes(b"new"))

    assert target.read_bytes() == b"new"
    assert _names(tmp_path) == sorted(
        [*kept, "model.safetensors", ".model.safetensors.tmp-dir", "sub"]
    )
    assert all((tmp_path / name).read_bytes() == b"leftover" for name in kept)
    assert _names(sub) == [".model.safetensors.tmp-abc"]


def test_a_failing_writer_keeps_the_old_target_and_removes_only_its_own_temp(
    tmp_path: Path,
) -> None:
    target = atomic_write_text(tmp_path / "model.safetensors", "old")
    stale = tmp_path / ".model.safetensors.tmp-abc"
    stale.write_text("killed writer")
    seen: list[Path] = []

    def fail(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "old"
    assert len(seen) == 1 and seen[0].name.startswith(".model.safetensors.tmp-")
    assert not seen[0].exists()
    # Cleaning up is the job of the next *successful* write; a failed one touches nothing else.
    assert _names(tmp_path) == [".model.safetensors.tmp-abc", "model.safetensors"]
    atomic_write_text(target, "new")
    assert _names(tmp_path) == ["model.safetensors"]


def test_a_temp_that_cannot_be_removed_does_not_fail_the_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "r.json"
    for name in (".r.json.tmp-locked", ".r.json.tmp-gone"):
        (tmp_path / name).write_text("leftover")
    real_unlink = os.unlink
    calls: list[str] = []

    def racing_unlink(path: str | os.PathLike[str], *args: object, **kwargs: object) -> None:
        name = Path(path).name
        calls.append(name)
        if name == ".r.json.tmp-locked":
            raise PermissionError(13, "Permission denied", str(path))
        if name == ".r.json.tmp-gone":
            real_unlink(path)  # another process got there first
            raise FileNotFoundError(2, "No such file or directory", str(path))
        real_unlink(path)

    monkeypatch.setattr(os, "unlink", racing_unlink)
    assert atomic_write_text(target, "new") == target
    assert sorted(calls) == [".r.json.tmp-gone", ".r.json.tmp-locked"]
    assert target.read_text() == "new"
    assert _names(tmp_path) == [".r.json.tmp-locked", "r.json"]


KILLED_WRITER = """
import os, signal, sys
from lsakit._io import atomic_write

def write(tmp):
    with open(tmp, "wb") as f:
        f.write(b"half of a checkpoint")
        f.flush()
    os.kill(os.getpid(), signal.SIGKILL)

atomic_write(sys.argv[1], write)
"""


def test_a_real_sigkill_leaves_a_temp_that_the_next_write_removes(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "ck" / "model.safetensors", "old")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(target)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr
    temps = [p for p in target.parent.iterdir() if p != target]
    assert len(temps) == 1 and temps[0].name.startswith(".model.safetensors.tmp-")
    assert temps[0].read_bytes() == b"half of a checkpoint"
    assert target.read_text() == "old"

    atomic_write_text(target, "new")
    assert not temps[0].exists()
    assert _names(target.parent) == ["model.safetensors"]
    assert target.read_text() == "new"
