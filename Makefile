# Two entry points: `make demo` runs the default job, `make test` runs the test suite.
# Each creates .venv and installs the package (with its dev extra) on first use.
# `make docs` builds the documentation site strictly (any warning fails) into docs/_build/html.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint docs

demo: $(VENV)/installed
	$(BIN)/lightning-hypergrad fit --config configs/digits_weight_decay.yaml

test: $(VENV)/installed
	$(BIN)/python -m pytest

docs: $(VENV)/docs-installed
	$(BIN)/python -m sphinx --fail-on-warning --keep-going --nitpicky -q -b html docs docs/_build/html
	@echo "docs built: docs/_build/html/index.html"

lint: $(VENV)/installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

$(VENV)/installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/docs-installed: $(VENV)/installed
	$(BIN)/python -m pip install --quiet -e '.[dev,docs]'
	touch $@
