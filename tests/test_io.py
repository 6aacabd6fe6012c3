from __future__ import annotations

import os
import stat
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
