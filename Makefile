# Two commands on a fresh machine: `make demo` (set up, then run the demo job) and `make test` (set up, then test).
VENV ?= .venv
PYTHON ?= python3
# torch goes in first and on its own: the pinned release is a CPU build that pip finds on these machines' disks,
# and installing it before the rest keeps pip from pulling a multi-GB CUDA build. On GPU machines set TORCH to the
# build you want, e.g. `make setup TORCH=torch`.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/seir run jobs/demo.yaml --out runs/demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
