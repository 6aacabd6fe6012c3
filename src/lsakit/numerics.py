"""Numerics modes: which code paths PyTorch's CPU math libraries take.

The same seed trains a slightly different model when a math library takes another code path, and
the libraries choose their paths by CPU: MKL's BLAS by vendor and instruction set, oneDNN's
convolutions by instruction set and cache sizes, ATen's vectorized kernels by instruction set.
A README figure measured on an AMD EPYC is then not what an Intel Xeon prints (issue 21). Two
modes:

``default``
    Every library takes the fastest path for this CPU (and whatever ``MKL_CBWR``,
    ``ATEN_CPU_CAPABILITY`` or ``ONEDNN_MAX_CPU_ISA`` the environment holds).

``portable``
    The paths are pinned, whatever the environment held before:

    * MKL: ``MKL_CBWR=COMPATIBLE`` (and ``MKL_DYNAMIC=FALSE``). MKL's other reproducibility
      branches (``AVX2``, ``AVX512``) hold on Intel CPUs only: on any other CPU MKL quietly uses
      its ``AUTO`` branch instead (measured on an AMD EPYC with ``MKL_VERBOSE=1``: ``MKL_CBWR=AVX2``
      runs as ``CNR:AUTO``). ``COMPATIBLE`` is the one branch MKL keeps on every x86-64 CPU.
    * ATen (PyTorch's own kernels): ``ATEN_CPU_CAPABILITY=avx2``, the instruction level every
      x86-64 CPU of the last decade has.
    * oneDNN: off (``torch.backends.mkldnn.enabled = False``), so convolutions run through ATen
      and MKL. oneDNN has no reproducibility mode, and picks kernels and blockings by cache size
      as well as by instruction set; ``ONEDNN_MAX_CPU_ISA=AVX2`` caps whatever still calls it.

    Bit-identical results also need the same number of torch threads (ATen splits reductions
    by thread): lsakit's reproductions run each run on one thread, and ``--threads`` sets it for a
    single command. :func:`describe` records all of it, and the thread count, in
    ``results.json``. The mode pins CPU paths only; on a GPU it changes nothing.

Each library reads its setting once, the first time it computes, so the mode must be chosen
before torch computes anything: ``LSAKIT_NUMERICS=portable`` in the environment (applied when
``lsakit`` is imported), ``lsakit --numerics portable …``, or :func:`use` as the first thing a
script does. :func:`use` then checks that every library took the setting, and raises
:class:`~lsakit.errors.ConfigError` if one had already chosen its path. Processes that lsakit
starts (a reproduction's worker pool, Ray tasks) inherit the mode.

This module imports no torch at import time: ``lsakit/__init__.py`` applies the environment's
mode before anything loads the libraries.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import platform
from pathlib import Path
from typing import Any, Literal, TypeAlias

from lsakit.errors import ConfigError

Mode: TypeAlias = Literal["default", "portable"]
MODES: tuple[Mode, ...] = ("default", "portable")
#: the environment variable that chooses the mode (read when lsakit is imported)
ENV_VAR = "LSAKIT_NUMERICS"
#: what the portable mode writes into the environment, over what was there
PORTABLE_ENV = {
    "MKL_CBWR": "COMPATIBLE",
    "MKL_DYNAMIC": "FALSE",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
#: ATen's capability names, lowest first (torch.backends.cpu.get_cpu_capability())
_ATEN_LEVELS = ("DEFAULT", "VSX", "ZVECTOR", "NEON", "SVE128", "SVE256", "AVX2", "AVX512")
#: MKL's CNR branch codes (mkl_types.h: MKL_CBWR_*), for describe()
_MKL_BRANCHES = {0: "OFF", 1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3",
                 7: "SSE4_1", 8: "SSE4_2", 9: "AVX", 10: "AVX2", 11: "AVX512_MIC",
                 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1"}  # fmt: skip
_MKL_BRANCH, _MKL_STRICT = 1, 0x10000

_current: Mode = "default"


def _x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def current() -> Mode:
    """The mode of this process."""
    return _current


def parse(mode: str) -> Mode:
    """``mode`` as a :data:`Mode`, or one line naming the choices."""
    if mode not in MODES:
        raise ConfigError(f"unknown numerics mode {mode!r}; choose one of {', '.join(MODES)}")
    return mode


def use(mode: str) -> Mode:
    """Choose this process's numerics mode (see the module docstring); returns it.

    ``portable`` writes :data:`PORTABLE_ENV` and ``LSAKIT_NUMERICS`` into ``os.environ`` (so child
    processes inherit it), turns oneDNN off and checks that MKL and ATen took the setting:
    :class:`~lsakit.errors.ConfigError` if torch had already computed with other paths. Choosing
    ``portable`` again is a no-op; going back to ``default`` in the same process is refused.
    """
    global _current
    chosen = parse(mode)
    if chosen == "default":
        if _current == "portable":
            raise ConfigError(
                "this process already runs with portable numerics (LSAKIT_NUMERICS=portable?); "
                "the math libraries cannot go back: start a new process without it"
            )
        return chosen
    os.environ.update(PORTABLE_ENV)
    os.environ[ENV_VAR] = "portable"
    import torch

    torch._C._set_mkldnn_enabled(False)  # torch.backends.mkldnn.enabled = False
    _check_portable()
    _current = "portable"
    return chosen


def use_environment() -> Mode:
    """Apply ``LSAKIT_NUMERICS`` if set (``lsakit/__init__.py`` calls this first)."""
    value = os.environ.get(ENV_VAR, "").strip()
    if not value:
        return _current
    try:
        return use(value)
    except ConfigError as e:
        raise ConfigError(f"{ENV_VAR}={value}: {e}") from None


def refuse(error: ConfigError) -> None:
    """A bad ``LSAKIT_NUMERICS`` met at import: the ``lsakit`` command prints one line and exits 2
    (it cannot catch an error raised while its own package imports); Python raises it."""
    import sys

    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    argv = getattr(sys, "orig_argv", [])
    command = script.name == "lsakit" or any(
        pair == ("-m", "lsakit") for pair in itertools.pairwise(argv)
    )
    if command and "--debug" not in sys.argv:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2)
    raise error


def _too_late(library: str, found: str) -> ConfigError:
    return ConfigError(
        f"portable numerics came too late: {library} had already chosen {found} before lsakit "
        f"set it; set {ENV_VAR}=portable in the environment, or call "
        "lsakit.numerics.use('portable') before torch computes anything"
    )


def _check_portable() -> None:
    """Raise if MKL or ATen runs another path than PORTABLE_ENV asks for."""
    branch = mkl_branch()
    if branch is not None and branch != "COMPATIBLE":
        raise _too_late("MKL", "its own dispatch" if branch == "OFF" else f"the {branch} branch")
    if _x86():
        found = aten_capability()
        if _ATEN_LEVELS.index(found) > _ATEN_LEVELS.index("AVX2"):
            raise _too_late("ATen", f"{found} kernels")


def aten_capability() -> str:
    """The instruction level of ATen's vectorized kernels in this process (fixed once read)."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def _mkl() -> Any:
    """MKL's service library as linked into torch (None: torch without MKL, e.g. aarch64)."""
    import torch

    if not torch._C.has_mkl:  # torch.backends.mkl.is_available()
        return None
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib", "torch_cpu.dll"):
        path = Path(torch.__file__).parent / "lib" / name
        if path.exists():
            try:
                lib = ctypes.CDLL(str(path))
                get = lib.mkl_serv_cbwr_get
            except (OSError, AttributeError):
                return None
            get.argtypes, get.restype = [ctypes.c_int], ctypes.c_int
            return get
    return None


def mkl_branch() -> str | None:
    """MKL's code branch in this process (``COMPATIBLE``, ``AUTO``, …; ``OFF``: MKL picks freely);
    None where torch has no MKL or does not expose it. Reading it fixes MKL's setting."""
    get = _mkl()
    if get is None:
        return None
    code = int(get(_MKL_BRANCH))
    return _MKL_BRANCHES.get(code, str(code))


def describe() -> dict[str, Any]:
    """What this process computes with: the mode, each library's path, threads, CPU and torch —
    recorded in ``results.json`` so that a figure says how it was measured."""
    import torch

    return {
        "mode": _current,
        "mkl": mkl_branch(),
        "aten": aten_capability(),
        "onednn": "on" if torch._C._has_mkldnn and torch._C._get_mkldnn_enabled() else "off",
        "threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "machine": platform.machine(),
        "torch": torch.__version__,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
