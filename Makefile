# The two commands a newcomer needs:
#   make run    live detection on the default microphone
#   make test   lint, type-check and the full test suite
# Both create .venv on first use and install everything into it.

VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
SHARED ?= $(abspath ../shared)
export SPOOFWATCH_SHARED ?= $(SHARED)

.PHONY: install run test lint

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: pip then takes the local CPU wheel instead of a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# Editable: the checkout is the package (spoofwatch/{model,stream,...} link
	# to the top-level folders), so tools and the interpreter see one tree.
	$(PY) -m pip install -q -e ".[dev,corpus]"
	$(PY) -m pip install -q --no-deps piper-tts==1.8.0
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/spoofwatch weights list | grep -q '^aasist-l  ok' || $(BIN)/spoofwatch weights fetch --model aasist-l
	$(BIN)/spoofwatch monitor

lint: install
	$(BIN)/ruff check spoofwatch model stream calibration configs tests benchmarks
	$(BIN)/mypy -p spoofwatch

test: lint
	$(BIN)/pytest -q
