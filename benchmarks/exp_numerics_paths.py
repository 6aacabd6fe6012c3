"""How far the README's printed figures move when the math libraries take another code path.

The README's Python API example and ``make demo`` print numbers from training. On another CPU the
libraries take other paths (MKL's BLAS by vendor and instruction set, ATen's kernels by instruction
set, oneDNN's by instruction set and caches), and the same seed trains a slightly different model
(issue 21). This script emulates other CPUs on this one with the libraries' own switches, runs
both under each path, and prints

1. for every path, the largest deviation from the README of each kind of number — the measurement
   behind the tolerances in ``tests/readme_blocks.py`` (``TOLERANCES``);
2. under ``LSAKIT_NUMERICS=portable``, whether the output is the same whatever the environment
   held before (the mode wins).

Run: ``python benchmarks/exp_numerics_paths.py [--only api|demo] [--no-portable]`` (about 20 s
per path and mode on 2 idle CPU cores; 10 rows in all).

Measured (2026-12-06, AMD EPYC (Zen 4, AVX-512), 2 cores, torch 2.14.1 with MKL 2024.2 and oneDNN
3.12; README figures from the portable mode): see the README's "Numerics" paragraph, which quotes
this script's table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import readme_blocks  # noqa: E402

#: other CPUs, emulated here: each switch is the library's own (read when it first computes)
PATHS: dict[str, dict[str, str]] = {
    "this CPU's default": {},
    "MKL_CBWR=COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
    "MKL_CBWR=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2": {
        "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"
    },
    "ATEN_CPU_CAPABILITY=default": {"ATEN_CPU_CAPABILITY": "default"},
    "MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=default": {
        "MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default"
    },
}  # fmt: skip
CLEARED = ("MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "LSAKIT_NUMERICS")
#: how the README chooses the portable mode in each: removed for the default-mode rows
API_PORTABLE = 'numerics.use("portable")'
DEMO_PORTABLE = ["--numerics", "portable"]


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update({"PYTHONWARNINGS": "ignore", "LSAKIT_PROGRESS_INTERVAL": "inf", **extra})
    return env


def run_api(extra: dict[str, str], portable: bool, work: Path) -> list[str]:
    """The README's API example as written (portable), or without its ``numerics.use`` line."""
    (block,) = readme_blocks.of_kind("tested: api")
    assert API_PORTABLE in block.text
    lines = [x for x in block.text.splitlines() if portable or API_PORTABLE not in x]
    done = subprocess.run(
        [sys.executable, "-c", "\n".join(lines)], cwd=work, env=_env(extra), capture_output=True,
        text=True, timeout=900, check=True,
    )  # fmt: skip
    return done.stdout.splitlines()


def run_demo(extra: dict[str, str], portable: bool, work: Path) -> list[str]:
    """``make demo``'s command as written (portable), or without ``--numerics portable``."""
    from test_readme import demo_command

    command = demo_command()
    at = next(i for i in range(len(command)) if command[i : i + 2] == DEMO_PORTABLE)
    if not portable:
        del command[at : at + 2]
    done = subprocess.run(
        command, cwd=work, env=_env(extra), capture_output=True, text=True, timeout=1800,
        check=True,
    )  # fmt: skip
    return readme_blocks.printed(done.stdout)


def expected(what: str) -> list[str]:
    if what == "api":
        return readme_blocks.api_expected()
    (block,) = [b for b in readme_blocks.of_kind("output") if b.argument == "make demo"]
    return readme_blocks.printed(block.text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("api", "demo"), default=None)
    parser.add_argument("--no-portable", action="store_true", help="the default mode only")
    args = parser.parse_args()
    whats = [args.only] if args.only else ["api", "demo"]
    modes = [False] if args.no_portable else [False, True]
    for what in whats:
        want = expected(what)
        print(f"\n{what}: largest |deviation| from the README per kind of number")
        for portable in modes:
            outputs = []
            for name, extra in PATHS.items():
                with tempfile.TemporaryDirectory() as tmp:
                    lines = (run_api if what == "api" else run_demo)(extra, portable, Path(tmp))
                outputs.append(lines)
                report = readme_blocks.deviations(lines, want)
                shown = ", ".join(f"{kind} {value:.4g}" for kind, value in report.items())
                mode = "portable" if portable else "default"
                print(f"  {mode:8s} {name}: {shown}", flush=True)
            if portable:
                same = all(lines == outputs[0] for lines in outputs)
                print(f"  portable: identical output under all {len(outputs)} environments: {same}")


if __name__ == "__main__":
    main()
