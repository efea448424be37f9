# The two commands that matter:  `make run` (the main job) and `make test` (the whole suite).
# Both set up a virtual environment in .venv first, so they work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup run test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[app,test]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/handgrad train

test: setup
	$(BIN)/python -m pytest
