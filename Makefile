# Two entry points: `make demo` runs the default job, `make test` runs the test suite.
# Each creates .venv and installs the package (with its dev extra) on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint

demo: $(VENV)/installed
	$(BIN)/lightning-hypergrad fit --config configs/digits_weight_decay.yaml

test: $(VENV)/installed
	$(BIN)/python -m pytest

lint: $(VENV)/installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

$(VENV)/installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@
