# Two commands on a fresh machine: `make demo` (set up, then run the demo job) and `make test` (set up, then test).
VENV ?= .venv
PYTHON ?= python3
# torch goes in first and on its own: the pinned release is a CPU build that pip finds on these machines' disks,
# and installing it before the rest keeps pip from pulling a multi-GB CUDA build. On GPU machines set TORCH to the
# build you want, e.g. `make setup TORCH=torch`.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
# constraints.txt pins every package a fresh install resolves (all but torch, which TORCH names), so a new clone
# gets the versions the suite was last green with. `make lock` rewrites it from the venv (README, "Pinned versions").
CONSTRAINTS := constraints.txt

.PHONY: setup demo test lint bench lock
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) "$(TORCH)"
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/seir run jobs/demo.yaml --out runs/demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .

# torch and its CUDA wheels stay out: TORCH picks the build per machine.
lock:
	{ echo "# What a fresh \`make setup\` installs (torch aside). Rewritten by \`make lock\`; see README."; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v -i -E '^(torch|triton)==|^(nvidia|cuda)-'; \
	} > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	[ ! -f $(VENV)/.installed ] || touch $(VENV)/.installed  # the venv is what the new file describes
