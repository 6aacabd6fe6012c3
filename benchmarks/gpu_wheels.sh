#!/usr/bin/env bash
# Download, on a machine that reaches the package index, the wheels that the GPU check needs on a
# CUDA machine that does not (benchmarks/gpu_check.sh installs them from .whl/). They are the
# pure-Python dependencies of lsakit that a typical CUDA PyTorch image lacks — pydantic with its
# compiled core and helpers (the versions of this checkout's .venv) — and torchattacks (optional,
# for the PGD comparison). Everything else (torch, numpy, scikit-learn, matplotlib, typer, rich,
# pyyaml, safetensors, pytest, hypothesis) is expected there; on a machine with an index
# gpu_check.sh simply pip-installs what is missing instead.
# Settings: GPU_PYTHON (the GPU machine's Python, default 3.12), DEST (default .whl), PY.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
GPU_PYTHON=${GPU_PYTHON:-3.12}
DEST=${DEST:-.whl}
version() { "$PY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1"; }

pins=()
for name in pydantic pydantic-core annotated-types typing-inspection typing-extensions; do
    pins+=("$name==$(version "$name")")
done
pins+=("torchattacks==3.5.1")
mkdir -p "$DEST"
# one version of each: a second wheel of the same package would stop the install there
rm -f "$DEST"/pydantic-*.whl "$DEST"/pydantic_core-*.whl "$DEST"/annotated_types-*.whl \
    "$DEST"/typing_inspection-*.whl "$DEST"/typing_extensions-*.whl "$DEST"/torchattacks-*.whl
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$GPU_PYTHON" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$DEST" "${pins[@]}"
echo "gpu-wheels: ${pins[*]} → $DEST ($(du -sh "$DEST" | cut -f1))"
