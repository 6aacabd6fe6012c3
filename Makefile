# lsakit — `make demo` runs the main job, `make test` the test suite. Both set up .venv first.
#
# The venv gets the CPU build of PyTorch pinned below *before* the package, so installing lsakit
# never pulls a CUDA build here. GPU users: `make install TORCH="torch==2.13.0 --index-url
# https://download.pytorch.org/whl/cu126"` (or any torch build you already use).

PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install-stamp
DEMO_DIR ?= runs/demo
BENCH_ARGS ?=

.PHONY: install demo test lint typecheck bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# LSA of a normally trained Moon model picks the MVL list; AT-FGSM vs AT-FGSM + LR on the MVL.
demo: install
	$(BIN)/lsakit --threads 1 reproduce moon --profile demo --jobs 2 --out $(DEMO_DIR)

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -q -n 2

# Every benchmark in benchmarks/ in one run, one table of ratios (~3 min on 2 CPU cores).
# BENCH_ARGS=--quick for a ~1 min check.
bench: install
	OMP_NUM_THREADS=1 $(BIN)/python benchmarks/run_all.py --threads 1 $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
