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

Run: ``python benchmarks/exp_numerics_paths.py [--only api|demo] [--runs-dir DIR]`` (about
1 min per path on 2 CPU cores).

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
#: the same environments with the portable mode on top: the mode must win
PORTABLE = {f"portable, {name}": {**env, "LSAKIT_NUMERICS": "portable"} for name, env in PATHS.items()}
CLEARED = ("MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "LSAKIT_NUMERICS")


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED}
    env.update({"PYTHONWARNINGS": "ignore", "LSAKIT_PROGRESS_INTERVAL": "inf", **extra})
    return env


def run_api(extra: dict[str, str], work: Path) -> list[str]:
    (block,) = readme_blocks.of_kind("tested: api")
    done = subprocess.run(
        [sys.executable, "-c", block.text], cwd=work, env=_env(extra), capture_output=True,
        text=True, timeout=900, check=True,
    )  # fmt: skip
    return done.stdout.splitlines()


def run_demo(extra: dict[str, str], work: Path) -> list[str]:
    sys.path.insert(0, str(REPO / "tests"))
    from test_readme import demo_command

    done = subprocess.run(
        demo_command(), cwd=work, env=_env(extra), capture_output=True, text=True, timeout=1800,
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
    parser.add_argument("--no-portable", action="store_true", help="skip the portable rows")
    args = parser.parse_args()
    whats = [args.only] if args.only else ["api", "demo"]
    paths = {**PATHS, **({} if args.no_portable else PORTABLE)}
    for what in whats:
        want = expected(what)
        outputs: dict[str, list[str]] = {}
        print(f"\n{what}: largest |deviation| from the README per kind of number")
        for name, extra in paths.items():
            with tempfile.TemporaryDirectory() as tmp:
                lines = (run_api if what == "api" else run_demo)(extra, Path(tmp))
            outputs[name] = lines
            report = readme_blocks.deviations(lines, want, what)
            shown = ", ".join(f"{kind} {value:.4g}" for kind, value in report.items())
            print(f"  {name}: {shown}", flush=True)
        portable = [v for k, v in outputs.items() if k.startswith("portable, ")]
        if portable:
            same = all(lines == portable[0] for lines in portable)
            print(f"  portable mode: output identical under all {len(portable)} environments: {same}")


if __name__ == "__main__":
    main()
