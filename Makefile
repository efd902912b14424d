# The two commands a newcomer needs:
#   make run    live detection on the default microphone; without one, the
#               server and its browser page on loopback (it prints the URL)
#   make test   lint, type-check and the full test suite
# Both create .venv on first use and install everything into it.

VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
SHARED ?= $(abspath ../shared)
export SPOOFWATCH_SHARED ?= $(SHARED)

.PHONY: install run test lint docs

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

# The official weights ship in the package: no download, works offline.
run: install
	$(BIN)/spoofwatch run

lint: install
	$(BIN)/ruff check spoofwatch model stream calibration configs tests benchmarks
	$(BIN)/ruff format --check spoofwatch model stream calibration configs tests benchmarks
	$(BIN)/mypy -p spoofwatch

test: lint
	$(BIN)/pytest -q

# The README's pictures, built from ../shared (docs/img/ is not committed):
# stream/score plots, the calibration report and the browser page's screenshot.
docs: install
	$(PY) docs/make_images.py --out docs/img
