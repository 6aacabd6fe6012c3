#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) with this machine's own python3 and its CUDA torch,
# which is never replaced. lsakit comes from this checkout (src/). Its pure-Python dependencies:
# from the wheels in .whl/ when there are any (`make gpu-wheels` downloads them, for a machine
# that reaches no package index), installed into a folder of their own and put on PYTHONPATH;
# otherwise pip installs whatever is missing (torch is already there, so pip leaves it alone).
# Usage: bash benchmarks/gpu_check.sh [gpu_check.py options, e.g. --data-dir .gpu-data --out FILE]
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/lsakit-gpu-site}
WHEELS=${GPU_CHECK_WHEELS:-.whl}

if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "gpu-check: $PY has no torch; install your CUDA build of PyTorch first" >&2
    exit 2
fi
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$WHEELS"/*.whl || exit 2
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" -c "import numpy, sklearn, matplotlib, typer, rich, pydantic, yaml, safetensors" 2>/dev/null; then
    echo "gpu-check: installing lsakit's missing dependencies (pip install -e .; torch stays)"
    "$PY" -m pip install -q -e . || exit 2
fi
exec "$PY" benchmarks/gpu_check.py "$@"
