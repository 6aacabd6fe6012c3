"""Grids on Ray: one real local cluster (127.0.0.1, 2 CPUs, no dashboard) for the module.

The cluster is started by a holder process (``ray.init``) that shuts it down when the module is
done, or when this process dies (its stdin closes). The commands run as real subprocesses that
connect to it with ``--address``, exactly as on a user's cluster.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from lsakit.errors import ConfigError
from lsakit.experiments import ExperimentResult
from lsakit.experiments.executors import (
    LocalExecutor,
    RayExecutor,
    _call_on_worker,
    _WorkerSetup,
    check_paths_visible,
    is_one_machine,
)
from lsakit.experiments.runner import GridError, Job, run_jobs

TESTS = Path(__file__).resolve().parent

HOLDER = """
import sys, ray
context = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                   _node_ip_address="127.0.0.1", _temp_dir=sys.argv[1], logging_level="ERROR")
print(context.address_info["gcs_address"], flush=True)
sys.stdin.read()  # until the tests are done, or their process is gone
ray.shutdown()
"""


@dataclass(frozen=True)
class Cluster:
    address: str
    env: dict[str, str]  # for the commands: no token (the cluster is loopback-only)
    tag: str  # in the environment of every worker of this cluster, to find them


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    pytest.importorskip(
        "ray", reason="ray is the optional extra lsakit[ray] (make install puts it in)"
    )
    folder = Path(tempfile.mkdtemp(prefix="lsakit-ray-", dir="/tmp"))  # short: Ray's socket paths
    tag = uuid.uuid4().hex
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "LSAKIT_TEST_CLUSTER": tag,
           "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, env=env, cwd=folder,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        address = holder.stdout.readline().strip()
        assert address, "the Ray cluster did not start"
        yield Cluster(address, env, tag)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        try:
            holder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            holder.kill()
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def lsakit(
    cluster: Cluster, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from lsakit.cli import main; main()", "--threads", "1", *args]
    return subprocess.run(
        command, capture_output=True, text=True, env=cluster.env, cwd=cwd, timeout=300
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def study_file(folder: Path, rows: list[dict[str, Any]]) -> Path:
    values = {
        "study": "grid", "description": "a grid on Ray", "dataset": "moons", "model": "model_a",
        "train": {"epochs": 1, "batch_size": 64, "limit": 256, "lr": 0.01, "eps": 0.05,
                  "steps": 2, "val_fraction": 0.25, "val_steps": 1, "method": "standard"},
        "rows": rows,
        "evaluation": {"attacks": ["pgd=0.05,steps=3"]},
        "profiles": {"quick": {"seeds": [0], "test_limit": 100}},
    }  # fmt: skip
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


# --------------------------------------------------------------------------------------------
# No cluster needed
# --------------------------------------------------------------------------------------------


def test_without_ray_the_ray_executor_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lsakit.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(SystemExit) as done:
        main(["reproduce", "moon", "--profile", "smoke", "--executor", "ray"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "pip install 'lsakit[ray]'" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--executor", "ray", "--jobs", "2"], "--jobs is for --executor local"),
        (["--address", "10.0.0.1:6379"], "--address: options of --executor ray"),
        (["--executor", "dask"], "--executor must be local or ray, got 'dask'"),
        (["--executor", "ray", "--cpus-per-run", "0"], "--cpus-per-run must be > 0"),
        (["--executor", "ray", "--gpus-per-run", "-1"], "--gpus-per-run must be ≥ 0"),
    ],
)
def test_bad_executor_options_are_one_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip(
        "ray", reason="ray is the optional extra lsakit[ray] (make install puts it in)"
    )
    from lsakit.cli import main

    with pytest.raises(SystemExit) as done:
        main(["study", "lsp", "--out", "unused", *args])
    assert done.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert message in err and "Traceback" not in err


def test_relative_paths_are_refused_where_other_nodes_would_not_see_them() -> None:
    here = {"192.0.2.2", "127.0.0.1"}
    assert is_one_machine(["192.0.2.2", "192.0.2.2"], here)
    assert not is_one_machine(["192.0.2.2", "10.0.0.7"], here)
    check_paths_visible(True, Path("runs/x"), Path("data"))  # one machine: fine
    check_paths_visible(False, Path("/shared/runs/x"), None)  # absolute: fine
    with pytest.raises(ConfigError, match=r"--out runs/x is relative.*--out /shared/runs/x"):
        check_paths_visible(False, Path("runs/x"), None)
    with pytest.raises(ConfigError, match=r"--data-dir data is relative"):
        check_paths_visible(False, Path("/shared/runs"), Path("data"))


def visible_gpus(payload: int, *needed: dict[str, Any]) -> dict[str, Any]:
    return {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"), "cwd": os.getcwd()}


def test_a_ray_task_checks_the_shared_directory_and_hides_the_gpus_it_did_not_ask_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # what Ray leaves to a task without GPUs
    monkeypatch.chdir(tmp_path)  # restored afterwards, like the variable
    marker = tmp_path / "out" / ".lsakit-drivers" / "driver-1"
    setup = _WorkerSetup(
        marker=str(marker), cwd=None, threads=1, numerics="default", hide_gpus=True
    )
    with pytest.raises(ConfigError, match=r"does not see the output directory .*/out"):
        _call_on_worker(visible_gpus, setup, 0)  # never written: a node without the mount
    marker.parent.mkdir(parents=True)
    marker.write_text("")
    driver = tmp_path / "driver"
    driver.mkdir()
    ran = _call_on_worker(visible_gpus, replace(setup, cwd=str(driver)), 0)
    assert ran == {"CUDA_VISIBLE_DEVICES": "", "cwd": str(driver)}
    os.environ["CUDA_VISIBLE_DEVICES"] = "0"  # a task with its own GPUs keeps Ray's choice
    ran = _call_on_worker(visible_gpus, replace(setup, hide_gpus=False), 0)
    assert ran["CUDA_VISIBLE_DEVICES"] == "0"


# --------------------------------------------------------------------------------------------
# The executors themselves, on a cheap job function
# --------------------------------------------------------------------------------------------


def grow(payload: int, *needed: dict[str, Any]) -> dict[str, Any]:
    """A job: its payload plus what the jobs it needs returned; a negative payload fails."""
    if payload < 0:
        raise ConfigError(f"payload {payload} is negative")
    return {"value": payload + sum(n["value"] for n in needed)}


GRID = [
    Job("a", 0, 1),
    Job("b", 0, 2, after=(("a", 0),)),
    Job("c", 0, -1),
    Job("d", 0, 4, after=(("c", 0),)),  # needs the failing one: not run
    Job("e", 0, 5, after=(("b", 0),)),
]


def run_failing_grid(executor: Any, out: Path) -> tuple[GridError, list[str]]:
    finished: list[str] = []
    with pytest.raises(GridError) as failed:
        run_jobs(executor, grow, GRID, out_dir=out, on_done=lambda job, _: finished.append(job.row))
    return failed.value, finished


@pytest.mark.parametrize("processes", [1, 2])
def test_the_local_executor_runs_each_job_after_the_ones_it_needs(
    tmp_path: Path, processes: int
) -> None:
    error, finished = run_failing_grid(LocalExecutor(processes), tmp_path)
    assert sorted(finished) == ["a", "b", "e"]
    assert finished.index("a") < finished.index("b") < finished.index("e")
    assert error.failed == [(("c", 0), "payload -1 is negative")]
    assert str(error).startswith("run c seed 0 failed: payload -1 is negative; 1 that need")
    assert "3 finished runs are kept" in str(error)


@pytest.mark.slow
def test_the_ray_executor_runs_the_same_jobs_with_the_same_results(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    executor = RayExecutor(cluster.address)
    try:
        good = run_jobs(executor, grow, [GRID[0], GRID[1], GRID[4]], out_dir=tmp_path)
        assert good == {("a", 0): {"value": 1}, ("b", 0): {"value": 3}, ("e", 0): {"value": 8}}
        error, finished = run_failing_grid(executor, tmp_path)
    finally:
        executor.close()
    assert sorted(finished) == ["a", "b", "e"]
    assert error.failed == [(("c", 0), "payload -1 is negative")]
    assert "1 that need a failed run were not run" in str(error)
    assert not (tmp_path / ".lsakit-drivers").exists()  # the driver's marker is cleaned up


@pytest.mark.slow
@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"),
    reason="the portable mode pins x86-64 code paths (ATen's AVX2 kernels)",
)
def test_ray_tasks_compute_in_the_drivers_numerics_mode(cluster: Cluster, tmp_path: Path) -> None:
    # the driver is portable, the cluster was started without it: the tasks get workers of their
    # own (a runtime environment with LSAKIT_NUMERICS) that import lsakit in that mode
    driver = (
        "import json, sys\nfrom pathlib import Path\nimport helpers\n"
        "from lsakit.experiments.executors import RayExecutor\n"
        "from lsakit.experiments.runner import Job, run_jobs\n"
        "executor = RayExecutor(sys.argv[1])\n"
        "try:\n"
        "    out = run_jobs(executor, helpers.numerics_of_worker, [Job('a', 0, 0)],\n"
        "                   out_dir=Path(sys.argv[2]))\n"
        "finally:\n"
        "    executor.close()\n"
        "print(json.dumps(out[('a', 0)]))"
    )
    env = {**cluster.env, "LSAKIT_NUMERICS": "portable"}
    done = subprocess.run(
        [sys.executable, "-c", driver, cluster.address, str(tmp_path)], env=env,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    worker = json.loads(done.stdout.splitlines()[-1])
    assert (worker["mode"], worker["aten"], worker["onednn"]) == ("portable", "AVX2", "off")


# --------------------------------------------------------------------------------------------
# Whole grids through the command line
# --------------------------------------------------------------------------------------------


def comparable(result: ExperimentResult) -> dict[str, Any]:
    """Every number of a reproduction except wall-clock times."""
    data = result.model_dump()
    data.pop("seconds")
    for row in data["rows"]:
        for run in row["runs"]:
            run.pop("seconds")
    return data


@pytest.mark.slow
def test_the_moon_smoke_grid_on_ray_gives_the_numbers_of_a_local_run(
    cluster: Cluster, moon_smoke: tuple[ExperimentResult, Path], tmp_path: Path
) -> None:
    local, _ = moon_smoke  # in this process, 1 thread
    # A relative --out on a one-machine cluster: the workers run in this command's directory
    # (the cluster's own processes run elsewhere, in the holder's directory).
    done = lsakit(cluster, "reproduce", "moon", "--profile", "smoke", "--executor", "ray",
                  "--address", cluster.address, "--out", "on-ray", "--no-report",
                  cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Ray cluster: 2 CPUs, 0 GPUs" in done.stdout
    on_ray = ExperimentResult.load(tmp_path / "on-ray" / "results.json")
    assert comparable(on_ray) == comparable(local)
    assert len(on_ray.rows) == 17 and on_ray.mvl == local.mvl
    assert not (tmp_path / "on-ray" / ".lsakit-drivers").exists()


def worker_running(cluster: Cluster, title: str) -> int | None:
    """The PID of this cluster's Ray worker whose title is ``ray::TITLE``, if there is one."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if not (proc / "cmdline").read_bytes().startswith(f"ray::{title}".encode()):
                continue
            if f"LSAKIT_TEST_CLUSTER={cluster.tag}".encode() in (proc / "environ").read_bytes():
                return int(proc.name)
        except OSError:
            continue  # gone meanwhile
    return None


@pytest.mark.slow
def test_a_bad_row_and_a_killed_worker_fail_the_grid_in_one_line_and_the_fixed_grid_completes(
    cluster: Cluster, tmp_path: Path
) -> None:
    rows = [
        {"name": "quick"},
        {"name": "bad", "train": {"method": "nonsense"}},  # fails inside its task
        {"name": "slow", "train": {"epochs": 40, "limit": 1024, "method": "pgd"}},  # killed
        {"name": "pruned", "prune": {"source": "slow", "sparsity": 0.5}},  # needs slow
    ]
    study = study_file(tmp_path, rows)
    out = tmp_path / "out"
    args = ["study", str(study), "--executor", "ray", "--address", cluster.address,
            "--out", str(out)]  # fmt: skip
    command = [sys.executable, "-c", "from lsakit.cli import main; main()", *args]
    first = subprocess.Popen(
        [*command, "--max-retries", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=cluster.env,
    )  # fmt: skip
    quick = out / "runs" / "quick" / "seed-0" / "run.json"
    slow = out / "runs" / "slow" / "seed-0"
    deadline = time.monotonic() + 120
    pid = None
    # Mid-run: the slow run has finished an epoch (of 40) and the quick one is done.
    while time.monotonic() < deadline and first.poll() is None:
        if quick.exists() and (slow / "metrics.jsonl").exists():
            pid = worker_running(cluster, "lsakit slow seed 0")
            if pid is not None:
                break
        time.sleep(0.05)
    assert pid is not None, "the slow run was not seen running"
    os.kill(pid, signal.SIGKILL)
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    [line] = error_lines(stderr)
    # the row's settings are YAML keys: the error names the key, not a flag
    assert line.startswith("error: run bad seed 0 failed: invalid method in row bad")
    assert "1 more failed (slow seed 0)" in line and "1 that need a failed run were not run" in line
    assert "1 finished run is kept" in line and "run the same command again" in line
    assert "slow seed 0: failed — its Ray worker process died" in " ".join(stdout.split())
    assert not (slow / "run.json").exists() and not (out / "runs" / "pruned").exists()
    assert not (out / "results.json").exists()
    stamp = quick.stat().st_mtime_ns

    rows[1] = {"name": "bad", "train": {"method": "standard"}}  # fixed
    study_file(tmp_path, rows)
    again = lsakit(cluster, *args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert quick.stat().st_mtime_ns == stamp  # reused, not trained again
    assert "quick seed 0: " in again.stdout and "(reused)" in again.stdout
    result = json.loads((out / "results.json").read_text())
    assert [r["row"] for r in result["runs"]] == ["quick", "bad", "slow", "pruned"]
    epochs = (slow / "metrics.jsonl").read_text().splitlines()
    assert len(epochs) == 40  # trained again from the start, to the end
    pruned = json.loads((out / "runs" / "pruned" / "seed-0" / "run.json").read_text())
    assert pruned["spec"]["train"]["init_checkpoint"].startswith(str(slow))  # after slow, from slow
    assert pruned["after"] == [json.loads((slow / "run.json").read_text())["key"]]
