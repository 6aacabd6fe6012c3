"""``make docs-check``: the README's command blocks run as written, in order, on small fixtures.

Every block marked ``<!-- tested: walk -->`` runs line by line in one working directory (so a
later block finds the runs of an earlier one), with ``../shared/data`` and ``$LSAKIT_DATA`` holding
an MNIST-shaped fixture (64 + 16 synthetic digits a small CNN can learn) and ``my-run.yaml``
beside it. ``make demo`` runs through make and prints the README's demo block; every other
``<!-- output: COMMAND -->`` block is compared with what COMMAND prints. Minutes of CPU, so the
default ``pytest`` run skips it (``make docs-check`` sets LSAKIT_DOCS_CHECK=1).
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import readme_blocks

pytestmark = pytest.mark.skipif(
    os.environ.get("LSAKIT_DOCS_CHECK") != "1",
    reason="minutes of CPU: `make docs-check` runs it (LSAKIT_DOCS_CHECK=1)",
)

REPO = readme_blocks.REPO
WALK = readme_blocks.of_kind("tested: walk")
OUTPUTS = [b for b in readme_blocks.of_kind("output") if b.argument != "make demo"]
#: the user's own YAML config of the AT-LR block (`lsakit train --config my-run.yaml`)
MY_RUN = "dataset: moons\nmethod: fgsm\neps: 0.05\nlr_layers: [L2]\ngamma: 0.1\n"
TIMEOUT = 600


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def write_mnist_fixture(root: Path, n_train: int = 64, n_test: int = 16) -> None:
    """MNIST's four IDX files under ``root/mnist``: noise with a bright patch whose place is the
    digit, so that the commands train models that learn something."""
    folder = root / "mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, (n, 28, 28))
        for digit in range(10):
            row, col = divmod(digit, 5)
            images[labels == digit, 4 + 10 * row : 12 + 10 * row, 1 + 5 * col : 6 + 5 * col] += 180
        _write_idx(folder / f"{stem}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", labels)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("readme-walk")
    write_mnist_fixture(root / "shared" / "data")
    work = root / "work"  # ../shared/data from here is the fixture
    work.mkdir()
    (work / "my-run.yaml").write_text(MY_RUN)
    return work


def _env(work: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
        "LSAKIT_DATA": str(work.parent / "shared" / "data"),
        "LSAKIT_PROGRESS_INTERVAL": "inf",
        "MLFLOW_TRACKING_URI": "",
    }


def run(line: str, work: Path, *, cwd: Path | None = None) -> str:
    """Run one README command line with bash; its stdout, or a failure naming the line."""
    started = time.monotonic()
    done = subprocess.run(
        ["bash", "-c", line], cwd=cwd or work, env=_env(work), capture_output=True, text=True,
        timeout=TIMEOUT,
    )  # fmt: skip
    seconds = time.monotonic() - started
    print(f"{seconds:6.1f} s  {line}")
    assert done.returncode == 0, (line, done.stdout[-2000:], done.stderr[-2000:])
    return done.stdout


def make_demo(work: Path) -> None:
    """``make demo`` as a new user runs it, in a checkout of its own: the Makefile, pyproject.toml
    and .venv linked in (so the demo writes ``runs/demo`` there and prints that path)."""
    checkout = work / "checkout"
    checkout.mkdir()
    for name in ("Makefile", "pyproject.toml", ".venv"):
        (checkout / name).symlink_to(REPO / name)
    # -s: make echoes no recipe lines, so stdout is the demo's own
    stdout = run("make -s --no-print-directory demo", work, cwd=checkout)
    (block,) = [b for b in readme_blocks.of_kind("output") if b.argument == "make demo"]
    printed, shown = readme_blocks.printed(stdout), readme_blocks.printed(block.text)
    for got, want in zip(
        readme_blocks.compared(printed), readme_blocks.compared(shown), strict=True
    ):
        assert not readme_blocks.mismatches(got, want), readme_blocks.mismatches(got, want)
    assert (checkout / "runs" / "demo" / "report.html").exists()


def test_the_walk_covers_the_command_sections() -> None:
    walked = " ".join(" ".join(readme_blocks.commands(b)) for b in WALK)
    for command in ("make demo", "lsakit train", "lsakit analyze", "--suite standard",
                    "--suite rand", "lsakit prune", "lsakit search", "torchrun"):  # fmt: skip
        assert command in walked, command


@pytest.mark.parametrize("block", WALK, ids=[b.where for b in WALK])
def test_readme_block_runs(block: readme_blocks.Block, workspace: Path) -> None:
    for line in readme_blocks.commands(block):
        if line == "make test":  # the README's test command is what CI runs, not run again here
            assert (REPO / ".ci" / "run").read_text().splitlines()[-1] == "make test"
        elif line == "make demo":
            make_demo(workspace)
        elif line.startswith("OMP_NUM_THREADS=1 torchrun"):
            stdout = run(line, workspace)
            assert stdout.count("MVL (pgd") == 1, stdout  # rank 0 alone prints the table
        else:
            assert line.startswith("lsakit "), f"{block.where}: how to run {line!r}?"
            run(line, workspace)


@pytest.mark.parametrize("block", OUTPUTS, ids=[b.where for b in OUTPUTS])
def test_readme_output_block_is_what_its_command_prints(
    block: readme_blocks.Block, workspace: Path
) -> None:
    stdout = run(block.argument, workspace)
    got, want = readme_blocks.printed(stdout), readme_blocks.printed(block.text)
    assert not readme_blocks.mismatches(got, want), readme_blocks.mismatches(got, want)


def test_the_readme_figure_is_what_its_command_draws(workspace: Path) -> None:
    """The README's one figure is the ``lsa.png`` that the command in its caption writes (the
    same command as an output block's, so the walk has usually run it already)."""
    from PIL import Image

    readme = readme_blocks.README.read_text(encoding="utf-8")
    figure = re.search(r"!\[[^\]]*\]\(([^)]+\.png)\)", readme)
    assert figure, "the README has no figure"
    command = re.search(r"\*The LSA[^*]*?`(lsakit [^`]*--out (\S+))` draws it", readme, re.S)
    assert command, "the figure's caption names no command"
    drawn = workspace / command.group(2) / "lsa.png"
    if not drawn.exists():
        run(command.group(1), workspace)
    with Image.open(REPO / figure.group(1)) as shown, Image.open(drawn) as made:
        assert shown.size == made.size
        a = np.asarray(shown.convert("RGB"), dtype=np.float64)
        b = np.asarray(made.convert("RGB"), dtype=np.float64)
    # the same figure, up to font rendering: a mean difference well under one grey level in 255
    assert float(np.abs(a - b).mean()) < 1.0
