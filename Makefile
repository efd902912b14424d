# The two commands a newcomer needs:
#   make run    live detection on the default microphone
#   make test   lint, type-check and the full test suite
# Both create .venv on first use and install everything into it.

VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
SHARED ?= $(abspath ../shared)
export SPOOFWATCH_SHARED ?= $(SHARED)

.PHONY: install reinstall run test lint

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: pip then takes the local CPU wheel instead of a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/spoofwatch weights list | grep -q '^aasist-l  ok' || $(BIN)/spoofwatch weights fetch --model aasist-l
	$(BIN)/spoofwatch monitor

reinstall: install
	# Test the installed (non-editable) package, rebuilt from this tree.
	$(PY) -m pip install -q --no-deps --force-reinstall .

lint: reinstall
	$(BIN)/ruff check spoofwatch model stream calibration configs tests benchmarks
	# From /tmp so mypy checks the installed package, not the unmapped source folders.
	cd /tmp && $(abspath $(BIN))/mypy --config-file $(abspath pyproject.toml) -p spoofwatch

test: lint
	$(BIN)/pytest -q
