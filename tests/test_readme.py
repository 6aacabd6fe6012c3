"""The README as executable truth: its examples run, and what they print is what it shows.

The "Your own model and data" examples and command lines run as they stand; every fenced block
carries a marker (tests/readme_blocks.py); the demo's output block, the Python API example and
the tables of models and Moon scales are compared with what the code prints. The slow walk over
the command blocks is tests/test_readme_walk.py (``make docs-check``).
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import readme_blocks
from helpers import importable

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> str:
    return readme_blocks.section(title)


#: every ``tested`` Python example of the README and the docs pages
TESTED = [b for b in readme_blocks.of_kind("tested") if b.language == "python"]
BLOCKS = [b.text for b in TESTED]


def test_the_sections_have_their_examples() -> None:
    assert len(BLOCKS) >= 7
    own = re.findall(
        r"<!-- tested -->\n```python\n(.*?)```", _section("Your own model and data"), re.S
    )
    assert len(own) >= 4 and set(own) <= set(BLOCKS)


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[b.where for b in TESTED])
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
    assert done.stdout.strip() or "print(" not in code  # an example that prints, printed


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


@pytest.mark.slow  # ~1-2 min: every `tested: cli` line as a user runs it
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


# ---------------------------------------------------------------------------------------------
# Every fenced block is accounted for; the demo block, the API example and the tables are what
# the code prints. The walk over the command blocks is tests/test_readme_walk.py (make docs-check).
# ---------------------------------------------------------------------------------------------
TEXT = readme_blocks.text()  # the README and the docs pages
FLAT = " ".join(TEXT.split())  # their prose with its line breaks as single spaces
MAKEFILE = (README.parent / "Makefile").read_text(encoding="utf-8")


def test_every_fenced_block_says_how_it_is_checked() -> None:
    found = readme_blocks.blocks()
    assert len(found) >= 20
    unmarked = [f"{b.where} ({b.marker or 'no marker'})" for b in found if b.kind is None]
    assert not unmarked, f"fenced blocks without a known marker: {unmarked}"
    assert len(readme_blocks.of_kind("tested: walk")) >= 6
    assert next(b.argument for b in readme_blocks.of_kind("output")) == "make demo"


def test_the_readme_is_short_and_every_docs_page_is_checked() -> None:
    readme = README.read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    pages = {
        p for p in readme_blocks.DOCS.rglob("*.md")
        if p.relative_to(readme_blocks.DOCS).parts[0] not in readme_blocks.GENERATED
    }  # fmt: skip
    assert pages == set(readme_blocks.DOCUMENTS[1:]), "docs pages missing from DOCUMENTS"
    # the README's two commands are the Quick start's, which make docs-check walks
    (two,) = [b for b in readme_blocks.blocks() if b.path == README and "make demo" in b.text]
    (walked,) = [b for b in readme_blocks.of_kind("tested: walk") if "make demo" in b.text]
    assert two.text == walked.text and walked.path.name == "getting-started.md"
    # every relative link of the README points at a file that exists
    for target in re.findall(r"\]\(((?!https?:)[^)#]+)", readme):
        assert (README.parent / target).exists(), target


def test_the_block_parser_reads_markers_and_commands() -> None:
    text = (
        "<!-- not-run: needs a GPU -->\n```bash\nlsakit a \\\n   --b 1   # c\n# d\nmake x\n```\n"
        "\n```\nplain\n```\n<!-- tested: walk -->\n\n```python\npass\n```\n"
    )
    first, second, third = readme_blocks.blocks(text)
    assert (first.kind, first.argument, first.line) == ("not-run", "needs a GPU", 2)
    assert readme_blocks.commands(first) == ["lsakit a --b 1", "make x"]
    assert (second.marker, second.kind) == (None, None)
    assert (third.kind, third.language) == ("tested: walk", "python")


def test_printed_numbers_compare_within_their_kinds_tolerance() -> None:
    want = ["│ Normal │  9.8 (97.1) │ 360.6 │ 0.223 │ seed 0 │ L2 │"]
    # a cell one character wider (the column widens), numbers within tolerance: the same
    close = ["│ Normal  │ 10.2 (97.1) │ 362.9 │ 0.250 │ seed 0 │ L2 │"]
    assert readme_blocks.mismatches(close, want) == []
    assert readme_blocks.deviations(close, want) == pytest.approx(
        {"fraction": 0.027, "percent": 0.4, "score": 2.3, "text": 0.0}
    )
    for far in (
        "│ Normal │  9.8 (97.1) │ 360.6 │ 0.254 │ seed 0 │ L2 │",  # fraction beyond 0.03
        "│ Normal │ 10.4 (97.1) │ 360.6 │ 0.223 │ seed 0 │ L2 │",  # percent beyond 0.5
        "│ Normal │  9.8 (97.1) │ 363.2 │ 0.223 │ seed 0 │ L2 │",  # score beyond 2.5
        "│ Normal │  9.8 (97.1) │ 360.6 │ 0.223 │ seed 1 │ L2 │",  # whole numbers are exact
        "│ Normal │  9.8 (97.1) │ 360.6 │ 0.223 │ seed 0 │ L1 │",  # so are names
        "│ Normal │  9.8 (97.1) │ 360.6 │ 0.223 │ seed 0 │",  # and the text
    ):
        assert readme_blocks.mismatches([far], want), far
    assert readme_blocks.mismatches(want + want, want)  # a line too many


def demo_command() -> list[str]:
    """The Makefile's demo recipe (its default ``DEMO_DIR``), run with this interpreter."""
    recipe = re.search(r"^demo:.*\n\t(.+)$", MAKEFILE, re.M)
    demo_dir = re.search(r"^DEMO_DIR \?= (\S+)$", MAKEFILE, re.M)
    assert recipe and demo_dir, "the Makefile has no demo recipe"
    args = recipe.group(1).replace("$(DEMO_DIR)", demo_dir.group(1)).split()
    assert args[0] == "$(BIN)/lsakit"
    return [sys.executable, "-m", "lsakit", *args[1:]]


@pytest.mark.slow
def test_make_demo_prints_the_readme_block(tmp_path: Path) -> None:
    command = demo_command()
    assert f"runs `{' '.join(['lsakit', *command[3:]])}`" in FLAT  # the command make demo runs
    env = {**os.environ, "LSAKIT_PROGRESS_INTERVAL": "inf", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = readme_blocks.printed(done.stdout)
    (block,) = [b for b in readme_blocks.of_kind("output") if b.argument == "make demo"]
    shown = readme_blocks.printed(block.text)
    # the same lines, their numbers within readme_blocks.TOLERANCES (another CPU's math paths)
    for got, want in zip(
        readme_blocks.compared(printed), readme_blocks.compared(shown), strict=True
    ):
        assert not readme_blocks.mismatches(got, want), readme_blocks.mismatches(got, want)
    # the prose below the block reads its numbers off it
    cells: dict[tuple[str, bool], list[str]] = {}  # (row label, accuracy table?) → its cells
    errors_from = next(
        i for i, line in enumerate(shown) if "relative error per layer under" in line
    )
    for i, line in enumerate(shown):  # the accuracy table comes first, then the relative errors
        parts = [cell.strip() for cell in line.split("│")]
        if len(parts) > 2 and parts[1].startswith("AT-FGSM"):
            cells[parts[1], i < errors_from] = parts[2:-1]
    rg = [float(cells[k, True][-1].split()[0]) for k in ("AT-FGSM", "AT-FGSM-LR-MVL")]
    base, ours = (float(cells[k, False][-1]) for k in ("AT-FGSM", "AT-FGSM-LR-MVL [L2]"))
    cut, gain = round(100 * (1 - ours / base)), round(rg[1] - rg[0])
    assert f"cuts its relative error under PGD by {cut}% and raises the R&G score by {gain}" in FLAT
    for name in ("results.json", "report.md", "report.html", "figures"):
        assert (tmp_path / "runs" / "demo" / name).exists()


def test_the_demo_runtime_agrees_with_its_profile() -> None:
    import yaml

    config = README.parent / "src" / "lsakit" / "experiments" / "configs" / "moon.yaml"
    profile = yaml.safe_load(config.read_text(encoding="utf-8"))["profiles"]["demo"]
    measured = re.search(r"`make demo` \(about (\d+) s on 2 CPU cores: (\d+) s measured", FLAT)
    assert measured, "the Quick start gives make demo's measured time"
    assert f"measured {measured.group(2)} s" in profile["expected_runtime"]


def test_the_python_api_example_prints_its_comments(tmp_path: Path) -> None:
    (block,) = readme_blocks.of_kind("tested: api")
    expected = readme_blocks.api_expected()
    assert len(expected) >= 6
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "LSAKIT_DATA": str(tmp_path / "no-data")}
    done = subprocess.run(
        [sys.executable, "-c", block.text], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    # the printed lines, their numbers within readme_blocks.TOLERANCES
    assert not readme_blocks.mismatches(done.stdout.splitlines(), expected)
    assert (tmp_path / "lsa.json").exists()


def _table(title: str) -> list[list[str]]:
    """The body rows (cells stripped) of the first Markdown table after the heading ``title``."""
    lines = readme_blocks.section(title).splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next(i for i in range(first, len(lines)) if not lines[i].startswith("|"))
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in lines[first + 2 : end]]


def test_the_models_table_lists_every_model_with_its_counts() -> None:
    from lsakit import models
    from lsakit.probe import default_layers

    rows = {row[0].strip("`"): row for row in _table("Models")}
    assert sorted(rows) == sorted(models.names())
    for name in models.names():
        model = models.build(name).eval()
        layers = default_layers(model, torch.rand(1, *models.info(name).input_shape))
        params, count = rows[name][2], rows[name][3]
        assert params == f"{models.count_parameters(model):,}", name
        assert count.split()[0] == str(len(layers)), name


def test_the_moon_scales_and_budgets_are_the_datas() -> None:
    import yaml

    from lsakit.config import PRESETS
    from lsakit.data.moons import moons_scale

    config = README.parent / "src" / "lsakit" / "experiments" / "configs" / "moon.yaml"
    moon = yaml.safe_load(config.read_text(encoding="utf-8"))
    noise = moon["data_options"]["noise"]
    default, reproduction = moons_scale(), moons_scale(noise=noise)
    assert f"scale {default:.3f} at the default noise 0.1" in FLAT
    assert f"{reproduction:.3f} at `reproduce moon`'s noise {noise}" in FLAT
    assert f"{reproduction:.3f} times the unit coordinates" in FLAT
    eps = moon["train"]["eps"]
    assert f"{eps:.5f}" == f"{0.3 / reproduction:.5f}"  # ε_raw 0.3
    assert f"Moon {eps} in `reproduce moon` (ε_raw 0.3)" in FLAT
    assert f"the PGD budget {eps} is ε_raw 0.3" in FLAT
    assert f"{PRESETS['moons'].train_eps:g} for `lsakit train -d moons`" in FLAT
