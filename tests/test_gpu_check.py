"""benchmarks/gpu_check.py on this (CPU) machine: the one-line no-CUDA answer, bad options, and,
with --allow-cpu, the part machinery (own processes, time budgets, the Markdown report)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available(), reason="with CUDA the script runs the whole check (make gpu-check)"
)


def run(*args: str, wrapper: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
    cmd = (
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")]
        if wrapper
        else [sys.executable, str(SCRIPT)]
    )
    return subprocess.run(
        [*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=240,
        env={**os.environ, "PYTHON": sys.executable, **env},
    )  # fmt: skip


@pytest.mark.parametrize("wrapper", [False, True], ids=["script", "gpu_check.sh"])
def test_without_cuda_it_says_so_in_one_line_and_exits_0(tmp_path: Path, wrapper: bool) -> None:
    out = tmp_path / "check.md"
    # no wheels to install: the checkout's .whl/ (if any) is for the GPU machine's Python
    proc = run("--out", str(out), wrapper=wrapper, GPU_CHECK_WHEELS=str(tmp_path / "none"))
    assert proc.returncode == 0, proc.stderr
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    assert proc.stdout.splitlines() == [
        f"gpu-check: no CUDA device (torch {torch.__version__}, {build}); nothing to check"
    ]
    assert not out.exists()


def test_bad_options_are_one_line_and_exit_2() -> None:
    for args, message in (
        (["--parts", "tests,warp"], "unknown part(s) warp; choose from tests, amp,"),
        (["--max-seconds", "0"], "--max-seconds, --batch, --seconds and --budget-scale must be"),
        (["--models", "model_b,resnet9000"], "unknown model(s) resnet9000 in --models"),
        (["--batch", "many"], "argument --batch: invalid int value: 'many'"),
    ):
        proc = run(*args)
        assert proc.returncode == 2, args
        assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
        assert proc.stderr.startswith("gpu-check: error: ")


def test_parts_run_in_their_own_processes_and_fill_the_report(tmp_path: Path) -> None:
    out = tmp_path / "check.md"
    # model B only, tiny batches, budgets × 4: the parts must finish on a busy 2-core machine
    proc = run("--allow-cpu", "--parts", "attacks,mnist", "--batch", "4",
               "--seconds", "0.1", "--models", "model_b", "--budget-scale", "4",
               "--data-dir", str(tmp_path / "no-data"), "--out", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == f"gpu-check: 2 of 2 parts ok or skipped → {out}"
    report = out.read_text()
    assert "- GPU: none (--allow-cpu: the parts ran on the CPU)" in report
    assert "| attacks | ok |" in report
    assert "| lsakit PGD-10, model_b, batch 4 |" in report
    assert "preact_resnet18" not in report
    if importlib.util.find_spec("torchattacks") is None:
        assert "| torchattacks PGD-10, model_b | skipped | torchattacks not importable |" in report
    assert (
        "| mnist | skipped |" in report and f"no MNIST under {tmp_path / 'no-data'}/mnist" in report
    )


# Imported at start-up (PYTHONPATH) by every Python the check starts: its throughput part blocks
# until it is killed, so that part overruns any budget, however fast the machine.
BLOCKING_PART = """
import sys, threading
if sys.argv[1:3] == ["--worker", "throughput"]:
    threading.Event().wait()
"""


def test_a_part_over_its_time_is_recorded_and_the_rest_not_started(tmp_path: Path) -> None:
    out = tmp_path / "check.md"
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKING_PART)
    # throughput's own 75 s budget × 0.04 = 3 s; after it, 16 - 3 s < the 15 s a part needs
    proc = run("--allow-cpu", "--parts", "throughput,amp", "--max-seconds", "16",
               "--budget-scale", "0.04", "--out", str(out),
               PYTHONPATH=str(tmp_path / "site"))  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "not ok: throughput, amp" in proc.stdout.splitlines()[-1]
    report = out.read_text()
    assert "| throughput | TIME OUT after 3 s |" in report
    assert "| amp | not run: the time budget is spent |" in report
