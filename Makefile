# Two commands do all the set-up: `make demo` runs the main job, `make test` runs the tests.
# Each creates .venv and installs the project into it when missing (or when pyproject.toml changed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export SIM2REAL_ROOT ?= $(CURDIR)/data

.PHONY: venv test demo lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml storage/_pngfilter.c models/translator/_pixel_blocks.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/sim2real demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy storage models tasks flows

bench: $(STAMP)
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf data bench/out .pytest_cache
