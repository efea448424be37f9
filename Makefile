# The two commands that matter:  `make run` (the main job) and `make test` (the whole suite).
# Both set up the virtual environment .venv first, so they work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test setup setup-test

# The application: NumPy for the library, Pillow, matplotlib and tqdm for the app.
$(VENV)/.app-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[app]'
	touch $@

# The tests add PyTorch (CPU build) and scikit-learn as oracles, a real browser for the web page, and MPI
# (mpi4py, MPICH) for the two-rank tests of chapter 12.
$(VENV)/.test-installed: $(VENV)/.app-installed scripts/install_browser.sh
	$(BIN)/python -m pip install --quiet -e '.[app,test,mpi]'
	scripts/install_browser.sh $(BIN)/python
	touch $@

setup: $(VENV)/.app-installed
setup-test: $(VENV)/.test-installed

run: setup
	$(BIN)/handgrad train

test: setup-test
	$(BIN)/python -m pytest
