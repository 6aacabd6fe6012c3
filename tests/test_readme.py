"""The README's "Your own model and data" examples run as they stand."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import importable

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


BLOCKS = re.findall(
    r"<!-- tested -->\n```python\n(.*?)```", _section("Your own model and data"), re.S
)


def test_the_section_has_its_examples() -> None:
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, tmp_path: Path) -> None:
    code = BLOCKS[index]
    needs = [m for m in ("timm", "torchvision", "transformers") if re.search(rf"\b{m}\b", code)]
    missing = [m for m in needs if not importable(m)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}, which cannot be imported here")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()


CLI = re.findall(
    r"<!-- tested: cli -->\n```bash\n(.*?)```", _section("Your own model and data"), re.S
)

NETS = """
from torch import nn

def mlp(*, width: int = 16, features: int = 4, classes: int = 2) -> nn.Module:
    return nn.Sequential(nn.Linear(features, width), nn.ReLU(), nn.Linear(width, classes))
"""


def _fixtures(root: Path) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / "pets" / name).mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "pets" / name / f"{i}.png")
    transformers = importlib.import_module("transformers")
    transformers.ViTConfig(
        image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, num_labels=2,
        architectures=["ViTForImageClassification"],
    ).save_pretrained(root / "vit-tiny")  # fmt: skip
    x = rng.random((60, 3, 8, 8)).astype(np.float32)
    np.savez(
        root / "images.npz", x=x[:48], y=np.arange(48) % 2, x_test=x[48:], y_test=np.arange(12) % 2
    )
    f = rng.standard_normal((120, 4)).astype(np.float32)
    np.savez(root / "features.npz", x=f, y=(f[:, 0] > 0).astype(np.int64))
    (root / "nets.py").write_text(NETS)


def test_readme_command_lines_run(tmp_path: Path) -> None:
    assert len(CLI) == 1
    lines = [line for line in CLI[0].splitlines() if line.startswith("lsakit ")]
    assert len(lines) >= 6
    missing = [m for m in ("timm", "torchvision", "transformers") if not importable(m)]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}, which cannot be imported here")
    _fixtures(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for line in lines:
        args = line.split("  #")[0].split()[1:]  # a trailing comment is no argument
        done = subprocess.run(
            [sys.executable, "-m", "lsakit", "--threads", "1", *args], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, (line, done.stdout[-1500:], done.stderr[-1500:])
