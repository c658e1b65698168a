# Set-up and the everyday jobs. Everything installs into .venv; nothing is installed by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SMT_DATA_DIR ?= $(abspath ../shared/data)
export SMT_DATA_DIR

.PHONY: install demo test test-fast lint bench verify clean

install: $(VENV)/.installed

# the runtime, all the demo needs: torch first, pinned to the CPU build that lies on this machine's disk;
# then the project (the stride-memory distribution, imported as smt) without extras, and its native scans
# built with the system C compiler (without one, the PyTorch scans run: it says so). A distribution named
# smt goes first: this project installed under its old name (its record would keep a second `smt` script),
# or the unrelated Surrogate Modeling Toolbox, which imports as smt too and cannot live beside it.
$(VENV)/.runtime: pyproject.toml
	@echo "make: creating $(VENV): pip, then torch 2.13.0 (CPU), then stride-memory (import smt) and its runtime dependencies"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip uninstall -q -y smt 2>/dev/null || true
	$(BIN)/pip install -q -e .
	$(BIN)/python -m smt.native
	touch $@

# the tests, lint and benchmarks: the runtime plus the dev extra (pytest, hypothesis, ruff, lm_eval, triton...)
$(VENV)/.installed: $(VENV)/.runtime pyproject.toml
	@echo "make: adding the dev extra to $(VENV) (pytest, hypothesis, ruff, lm_eval, triton...; a few minutes)"
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.runtime
	$(BIN)/python scripts/demo.py $(DEMO_ARGS)

test: install
	$(BIN)/python -m pytest -q tests

# the developer's loop: everything but the tests marked slow (subprocess chains, fuzzers, end-to-end runs)
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" tests

lint: install
	$(BIN)/ruff check src tests benchmarks scripts experiments

bench: install
	$(BIN)/python -m benchmarks.run_all

verify: install
	$(BIN)/python scripts/verify_structure.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist src/*.egg-info
