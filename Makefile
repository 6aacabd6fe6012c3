# lsakit — `make demo` runs the main job, `make test` the test suite. Both set up .venv first.
#
# The venv gets the PyTorch build pinned below *before* the package, so installing lsakit never
# pulls another torch. The pin is torch 2.14.1 with torchvision 0.29.1, the newest pair whose
# torchvision imports beside its torch here (both taken from this machine's local wheels; a CUDA
# build, which runs on the CPU): the tests run real torchvision and timm models (timm imports
# torchvision). CPU-only users without torchvision: `make install TORCH=torch==2.13.0`; GPU users:
# `make install TORCH="torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cu126"`
# (or any torch build you already use).

PYTHON ?= python3
TORCH ?= torch==2.14.1 torchvision==0.29.1
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
DEMO_DIR ?= runs/demo
BENCH_ARGS ?=

.PHONY: install demo test test-slow test-numerics docs docs-check lint typecheck bench clean gpu-check gpu-wheels gpu-data

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps robustbench==1.1.1  # lsakit[robustbench]'s note
	touch $(STAMP)

# LSA of a normally trained Moon model picks the MVL list; AT-FGSM vs AT-FGSM + LR on the MVL.
# Portable numerics: the README's figures on any x86-64 CPU (lsakit.numerics).
demo: install
	$(BIN)/lsakit --threads 1 --numerics portable reproduce moon --profile demo --jobs 2 --out $(DEMO_DIR)

# the docs site's own code and the tutorials (ruff formats notebooks too; not the pages' Markdown)
DOCS_CODE := docs/conf.py docs/_ext docs/tutorials
lint: install
	$(BIN)/ruff check src tests benchmarks $(DOCS_CODE)
	$(BIN)/ruff format --check src tests benchmarks $(DOCS_CODE)

typecheck: install
	$(BIN)/mypy

# The fast lane: every test but those marked slow (pyproject.toml); `make test-slow` runs those
# (the reproductions and other end-to-end tests). CI (.ci/run) runs both.
test: lint typecheck
	$(BIN)/pytest -q -n 2 -m "not slow"

test-slow: install
	$(BIN)/pytest -q -n 2 -m slow

# The README's figures and the demo again, with the math libraries told to take paths that are no
# CPU's default (MKL's SSE2 branch, ATen's scalar kernels, oneDNN capped at AVX2): the portable
# numerics mode must win, so that a figure only one machine prints cannot land (CI runs it).
NUMERICS_PATH ?= MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=AVX2
test-numerics: install
	env $(NUMERICS_PATH) $(BIN)/pytest -q -n 2 -p no:cacheprovider tests/test_readme.py

# The documentation site (docs/, Sphinx): static HTML in docs/_build/html, every warning an error —
# a broken reference, a malformed docstring, an undocumented parameter or return value of a public
# callable (docs/_ext/lsakit_docs.py), a notebook cell that raises. The tutorials run at every build
# (a few minutes); their data sets come from DOCS_DATA (MNIST: downloaded there when missing).
DOCS_DATA ?= $(if $(wildcard ../shared/data/mnist),$(abspath ../shared/data),$(HOME)/.cache/lsakit/data)
DOCS_OUT ?= docs/_build/html
docs: install
	LSAKIT_DATA=$(DOCS_DATA) LSAKIT_PROGRESS_INTERVAL=5 $(BIN)/sphinx-build -W --keep-going -q -b html docs $(DOCS_OUT)
	@echo "docs: open $(DOCS_OUT)/index.html"

# What a reader opens, checked as a reader sees it (each line one check): the README as executable
# truth (every fenced block marked; its command blocks run as written on small fixtures, printed
# output compared with the README's: tests/test_readme_walk.py), then the HTML report in a browser.
docs-check: install
	LSAKIT_DOCS_CHECK=1 $(BIN)/pytest -q -p no:cacheprovider tests/test_readme.py tests/test_readme_walk.py
	$(BIN)/pytest -q -p no:cacheprovider tests/test_report_browser.py

# Every benchmark in benchmarks/ in one run, one table of ratios (~9 min on 2 CPU cores).
# BENCH_ARGS=--quick for a ~1 min check.
bench: install
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/run_all.py --threads 1 $(BENCH_ARGS)

# The GPU check (benchmarks/README.md): on a CUDA machine, ≤ 8 min, with that machine's own python3
# and CUDA torch (not the venv); writes benchmarks/gpu-check.md. Without CUDA: one line, exit 0.
# GPU_CHECK_ARGS="--data-dir DIR --out FILE --parts …". For a GPU machine that reaches no package
# index, first run here `make gpu-wheels gpu-data` and take the ignored .whl/ and .gpu-data/ along.
GPU_PYTHON ?= python3
GPU_CHECK_ARGS ?=
GPU_DATA_FROM ?= ../shared/data
gpu-check:
	PYTHON=$(GPU_PYTHON) bash benchmarks/gpu_check.sh $(GPU_CHECK_ARGS)

gpu-wheels: install
	PY=$(BIN)/python bash benchmarks/gpu_wheels.sh

gpu-data:
	mkdir -p .gpu-data
	cp -r $(GPU_DATA_FROM)/mnist .gpu-data/

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
