"""The numerics modes (lsakit.numerics): portable pins the math libraries' code paths.

Each library reads its setting once per process, so every check runs in a fresh subprocess. Other
CPUs are emulated here with the libraries' own switches (``MKL_CBWR``, ``ONEDNN_MAX_CPU_ISA``,
``ATEN_CPU_CAPABILITY``): under the default mode they change the bits of a small training run;
under the portable mode they must not.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
#: other CPUs, emulated: each switch is the library's own
EMULATED = [
    {},
    {"MKL_CBWR": "COMPATIBLE"},
    {"MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    {"ATEN_CPU_CAPABILITY": "default"},
]
SWITCHES = ("MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "LSAKIT_NUMERICS")

#: a few training steps of model B (convolutions: oneDNN; linear layers: MKL; the rest: ATen) and
#: model A; prints the weights' sha256 and how the process computed
TRAIN = """
import hashlib, json, torch
from lsakit import models, numerics
torch.set_num_threads(1)
digest = hashlib.sha256()
for name, shape, classes in (("model_b", (32, 1, 28, 28), 10), ("model_a", (64, 2), 2)):
    torch.manual_seed(0)
    model = models.build(name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.rand(*shape), torch.randint(0, classes, (shape[0],))
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    for p in model.parameters():
        digest.update(p.detach().numpy().tobytes())
print(json.dumps({"weights": digest.hexdigest(), "numerics": numerics.describe()}))
"""


def run(code: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    clean["PYTHONPATH"] = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", code, *args], env={**clean, **env}, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip


def trained(env: dict[str, str]) -> dict[str, object]:
    done = run(TRAIN, env)
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout)
    return result


x86_only = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"),
    reason="the portable mode pins x86-64 code paths (MKL, ATen's AVX2 kernels)",
)


@x86_only
@pytest.mark.slow
def test_portable_numerics_give_the_same_bits_whatever_the_environment_held() -> None:
    default = [trained(env) for env in EMULATED]
    # the emulation works: under the default mode the paths change the trained weights
    assert len({str(r["weights"]) for r in default}) > 1
    portable = [trained({**env, "LSAKIT_NUMERICS": "portable"}) for env in EMULATED]
    assert len({str(r["weights"]) for r in portable}) == 1  # the mode wins
    for r in portable:
        recorded = r["numerics"]
        assert isinstance(recorded, dict)
        assert (recorded["mode"], recorded["aten"], recorded["onednn"]) == (
            "portable",
            "AVX2",
            "off",
        )
        assert recorded["mkl"] in ("COMPATIBLE", None)  # None: a torch without MKL
    assert os.environ.get("LSAKIT_NUMERICS") is None  # nothing leaked into this process


@x86_only
def test_use_portable_in_a_script_pins_the_paths_and_refuses_to_come_too_late() -> None:
    # importing lsakit, all of it, computes nothing: a script can choose the mode after its imports
    in_time = run(
        "import torch\nimport lsakit.cli, lsakit.experiments, lsakit.report, lsakit.suite\n"
        "from lsakit import numerics\nnumerics.use('portable')\n"
        "print(numerics.describe()['aten'], torch.backends.mkldnn.enabled)",
        {"ATEN_CPU_CAPABILITY": "avx512"},
    )
    assert in_time.returncode == 0, in_time.stderr[-2000:]
    assert in_time.stdout.split() == ["AVX2", "False"]
    late = run(  # a model's forward has called MKL (its default dispatch) and ATen
        "import torch\nfrom lsakit import models, numerics\n"
        "models.build('model_a')(torch.rand(64, 2))\nnumerics.use('portable')",
        {},
    )
    assert late.returncode != 0
    assert "portable numerics came too late" in late.stderr
    assert "set LSAKIT_NUMERICS=portable in the environment" in late.stderr


def test_a_bad_mode_is_one_line_and_exit_2_from_the_command_line() -> None:
    for env, args, message in (
        ({}, ["--numerics", "fast", "models"], "unknown numerics mode 'fast'"),
        ({"LSAKIT_NUMERICS": "fast"}, ["models"], "LSAKIT_NUMERICS=fast: unknown numerics mode"),
        ({"LSAKIT_NUMERICS": "portable"}, ["--numerics", "default", "models"],
         "already runs with portable numerics"),
    ):  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "lsakit", *args],
            env={**{k: v for k, v in os.environ.items() if k not in SWITCHES}, **env},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
        assert done.stdout == ""  # refused before any work


@x86_only
def test_pool_workers_compute_in_the_drivers_mode() -> None:
    done = run(
        "import json\nfrom pathlib import Path\nimport helpers\n"
        "from lsakit.experiments.executors import LocalExecutor\n"
        "from lsakit.experiments.runner import Job, run_jobs\n"
        "jobs = [Job('a', 0, 0), Job('b', 0, 0)]\n"
        "out = run_jobs(LocalExecutor(2), helpers.numerics_of_worker, jobs, out_dir=Path('.'))\n"
        "print(json.dumps([out[j.key] for j in jobs]))",
        {"LSAKIT_NUMERICS": "portable", "ATEN_CPU_CAPABILITY": "avx512"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for worker in json.loads(done.stdout):
        assert (worker["mode"], worker["aten"], worker["threads"]) == ("portable", "AVX2", 1)
