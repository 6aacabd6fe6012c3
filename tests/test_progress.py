"""Progress output: rich bars on a terminal, plain rate-limited lines in logs (pipes, CI)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from lsakit._progress import (
    Progress,
    _Task,
    clock_text,
    line_interval,
    notebook_output,
    progress_bar,
)
from lsakit.errors import ConfigError
from lsakit.experiments.executors import LocalExecutor
from lsakit.experiments.runner import Job, run_jobs


class Clock:
    """Seconds that move only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def log_console() -> tuple[Console, io.StringIO]:
    """A console writing to a buffer: not a terminal, as a pipe or a log file."""
    buffer = io.StringIO()
    return Console(file=buffer, width=200), buffer


def test_lines_off_a_terminal_say_counts_elapsed_and_eta_at_most_every_interval() -> None:
    console, buffer = log_console()
    clock = Clock()
    with Progress(console=console, interval=10.0, clock=clock) as progress:
        task = progress.add_task("LSA", 40)
        for _ in range(40):  # 1 s a batch
            clock.now += 1.0
            progress.advance(task)
    lines = buffer.getvalue().splitlines()
    # a line at 10, 20, 30 and 40 s: done/total, the share, elapsed and the remaining time
    assert lines == [
        "LSA: 10/40 batches (25%), elapsed 0:10, ETA 0:30",
        "LSA: 20/40 batches (50%), elapsed 0:20, ETA 0:20",
        "LSA: 30/40 batches (75%), elapsed 0:30, ETA 0:10",
        "LSA: 40/40 batches (100%), elapsed 0:40",
    ]


def test_the_pace_is_shared_by_the_tasks_and_notes_and_unknown_totals_are_shown() -> None:
    console, buffer = log_console()
    clock = Clock()
    with Progress(console=console, interval=4.0, clock=clock) as progress:
        for epoch in (1, 2, 3):  # three 3-second epochs of 3 steps: a line every 4 s or more
            task = progress.add_task(f"epoch {epoch}/3", 3, "steps")
            for step in range(3):
                clock.now += 1.0
                progress.advance(task, note=f"loss {1 / (3 * epoch + step):.2f}")
            progress.remove_task(task)
        task = progress.add_task("grid", None, "runs")
        clock.now += 75.0
        progress.advance(task, 2)
    assert buffer.getvalue().splitlines() == [
        "epoch 2/3: 1/3 steps (33%), elapsed 0:01, ETA 0:02, loss 0.17",
        "epoch 3/3: 2/3 steps (67%), elapsed 0:02, ETA 0:01, loss 0.10",
        "grid: 2 runs, elapsed 1:15",
    ]


def test_disabled_progress_prints_nothing_and_zero_interval_prints_every_step() -> None:
    console, buffer = log_console()
    with Progress(False, console=console, interval=0.0) as progress:
        progress.advance(progress.add_task("LSA", 2))
    assert buffer.getvalue() == ""
    with Progress(console=console, interval=0.0, clock=Clock()) as progress:
        task = progress.add_task("LSA", 2)
        progress.advance(task)
        progress.advance(task)
    assert buffer.getvalue().splitlines() == [
        "LSA: 1/2 batches (50%), elapsed 0:00, ETA 0:00",
        "LSA: 2/2 batches (100%), elapsed 0:00",
    ]


def test_a_terminal_gets_a_bar_not_lines() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=100, force_terminal=True, force_interactive=True)
    with Progress(console=console, interval=0.0) as progress:
        task = progress.add_task("LSA", 2)
        progress.advance(task)
        progress.advance(task)
    text = buffer.getvalue()
    assert "━" in text and "2/2" in text  # the rich bar and its count
    assert "batches" not in text and "elapsed" not in text  # no plain line


def test_the_notebook_output_has_a_line_per_task_with_a_bar_while_it_runs() -> None:
    running = _Task("LSA", 40, "batches", started=100.0, done=12)
    unknown = _Task("grid", None, "runs", started=100.0, done=2, note="<last: a & b>")
    finished = _Task("epoch 1/2", 4, "steps", started=90.0, done=4, note="loss 0.41")
    finished.end(94.0)
    stopped = _Task("epoch 2/2", 4, "steps", started=94.0, done=1)
    stopped.end(95.0)
    shown = notebook_output([finished, stopped, running, unknown], now=130.0)
    assert shown["text/plain"].splitlines() == [
        "epoch 1/2: 4/4 steps (100%), elapsed 0:04, loss 0.41, done",
        "epoch 2/2: 1/4 steps (25%), elapsed 0:01, stopped",  # short of its total: no ETA
        "LSA: 12/40 batches (30%), elapsed 0:30, ETA 1:10",
        "grid: 2 runs, elapsed 0:30, <last: a & b>",
    ]
    page = shown["text/html"]
    assert page.count("<progress") == 2  # the running tasks only
    assert '<progress value="12" max="40" ' in page
    assert "<progress style=" in page  # unknown total: an indeterminate bar
    assert "&lt;last: a &amp; b&gt;" in page and "<last" not in page
    assert "\x1b" not in page + shown["text/plain"]


def test_the_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LSAKIT_PROGRESS_INTERVAL", raising=False)
    assert line_interval() == 10.0
    monkeypatch.setenv("LSAKIT_PROGRESS_INTERVAL", "2.5")
    assert line_interval() == 2.5
    monkeypatch.setenv("LSAKIT_PROGRESS_INTERVAL", "inf")
    assert line_interval() == float("inf")
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv("LSAKIT_PROGRESS_INTERVAL", bad)
        with pytest.raises(ConfigError, match="LSAKIT_PROGRESS_INTERVAL must be a number"):
            line_interval()
    assert clock_text(59.6) == "1:00" and clock_text(3725) == "1:02:05"


def test_progress_bar_totals_follow_the_loader_and_max_batches(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LSAKIT_PROGRESS_INTERVAL", "0")
    with progress_bar(range(5), 3, True, "FGSM sweep") as advance:
        for _ in range(3):
            advance()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "FGSM sweep: 1/3 batches (33%)",
        "FGSM sweep: 2/3 batches (67%)",
        "FGSM sweep: 3/3 batches (100%)",
    ]


def test_a_grid_counts_its_finished_runs_when_it_logs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LSAKIT_PROGRESS_INTERVAL", "0")
    jobs = [Job("Normal", seed, seed) for seed in range(3)]
    said: list[str] = []
    results = run_jobs(
        LocalExecutor(), lambda seed: {"seed": seed}, jobs, out_dir=tmp_path, log=said.append
    )
    assert results[("Normal", 2)] == {"seed": 2}
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "grid: 1/3 runs (33%)",
        "grid: 2/3 runs (67%)",
        "grid: 3/3 runs (100%)",
    ]
    run_jobs(LocalExecutor(), lambda seed: {"seed": seed}, jobs, out_dir=tmp_path)  # no log: silent
    assert capsys.readouterr().out == "" and said == []


# --------------------------------------------------------------------------------------------
# The real command line, its output through a pipe
# --------------------------------------------------------------------------------------------
def lsakit(*args: str, interval: str = "0") -> str:
    """Run ``lsakit ARGS`` with stdout and stderr into one pipe; its output (exit code 0)."""
    env = {**os.environ, "LSAKIT_PROGRESS_INTERVAL": interval}
    done = subprocess.run(
        [sys.executable, "-m", "lsakit", "--threads", "1", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout
    return done.stdout


@pytest.fixture(scope="module")
def moon_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Model A trained normally on Moon for 2 epochs (its output through a pipe, too)."""
    run_dir = tmp_path_factory.mktemp("moon")
    output = lsakit("train", "-d", "moons", "--epochs", "2", "--batch-size", "200",
                    "--out", str(run_dir))  # fmt: skip
    return run_dir / "model.safetensors", output


def test_train_through_a_pipe_prints_step_lines_and_no_blank_line(
    moon_run: tuple[Path, str],
) -> None:
    _, output = moon_run
    lines = output.splitlines()
    assert "" not in lines  # a bar would have left one
    steps = [line for line in lines if line.startswith("epoch 2/2: ") and " steps (" in line]
    assert steps, output
    total = int(steps[-1].split("/")[2].split()[0])
    assert steps[-1].startswith(f"epoch 2/2: {total}/{total} steps (100%), elapsed ")
    assert "loss " in steps[-1] and "acc " in steps[-1]


def test_analyze_through_a_pipe_prints_counted_lines_and_no_blank_line(
    moon_run: tuple[Path, str], tmp_path: Path
) -> None:
    checkpoint, _ = moon_run
    output = lsakit("analyze", "--checkpoint", str(checkpoint), "-p", "gaussian=0.03",
                    "-p", "fgsm=0.03", "--limit", "100", "--batch-size", "25",
                    "--out", str(tmp_path))  # fmt: skip
    lines = output.splitlines()
    assert "" not in lines
    progress = [line for line in lines if line.startswith("LSA: ")]
    assert [line.split(",")[0] for line in progress] == [
        "LSA: 1/4 batches (25%)",
        "LSA: 2/4 batches (50%)",
        "LSA: 3/4 batches (75%)",
        "LSA: 4/4 batches (100%)",
    ]
    assert ", ETA " in progress[0] and "MVL (" in output


def test_the_suite_through_a_pipe_prints_counted_lines_and_no_blank_line(
    moon_run: tuple[Path, str], tmp_path: Path
) -> None:
    checkpoint, _ = moon_run
    output = lsakit("evaluate", "--checkpoint", str(checkpoint), "--suite", "standard",
                    "--eps", "0.05", "--n-examples", "20", "--batch-size", "10",
                    "--out", str(tmp_path))  # fmt: skip
    lines = output.splitlines()
    assert "" not in lines
    # APGD-CE attacks the correctly classified points, 10 a batch: its last line is k/k
    apgd = [line for line in lines if line.startswith("APGD-CE (ε=0.05): ")]
    assert apgd and apgd[-1].split(",")[0].endswith("batches (100%)"), output
    # the ε-growth check: 0.05, 0.1, 0.2, 0.4, 0.8, then 1 (the whole box)
    growth = [line for line in lines if line.startswith("check eps-growth (PGD-20): ")]
    assert [line.split(",")[0].split(": ")[1] for line in growth] == [
        f"{k}/6 ε values ({100 * k / 6:.0f}%)" for k in range(1, 7)
    ]
    assert "standard suite (worst case)" in output
