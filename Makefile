# meterlink: two commands set everything up on a fresh machine with nothing but Python.
#   make demo   - a virtual meter on a pty, a SQLite shared list, the whole job end to end
#   make test   - ruff, mypy and the whole pytest suite (CI runs this)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.meterlink-installed

.PHONY: test demo bench torture lint typecheck clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

torture: $(STAMP)
	METERLINK_TORTURE_RUNS=$${METERLINK_TORTURE_RUNS:-300} $(BIN)/python -m pytest -m slow --timeout=3600 $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache
