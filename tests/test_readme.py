"""The README's "Your own model and data" examples run as they stand."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


BLOCKS = re.findall(
    r"<!-- tested -->\n```python\n(.*?)```", _section("Your own model and data"), re.S
)


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except Exception:  # torchvision beside a torch it was not built for raises RuntimeError
        return False
    return True


def test_the_section_has_its_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, tmp_path: Path) -> None:
    code = BLOCKS[index]
    needs = [m for m in ("timm", "torchvision", "transformers") if re.search(rf"\b{m}\b", code)]
    missing = [m for m in needs if not _importable(m)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}, which cannot be imported here")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()
