# Two commands do everything on a fresh machine:
#   make bench   create the environment if missing, then run `zoo bench` on its default
#   make test    create the environment if missing, then run the test suite
#   make mutants mutation testing of the modules behind published numbers (slow; not in CI):
#                writes results/mutation.md; MODULES='statistics engine' runs only those
# TORCH picks the torch requirement; the default takes the CPU wheel that lies on this disk.

PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: env bench test lint mutants clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev,plot]"
	touch $@

bench: env
	$(BIN)/zoo bench

test: env
	$(BIN)/pytest -q

mutants: env
	$(PYTHON) tools/mutants.py --venv $(VENV) $(MODULES)

lint: env
	$(BIN)/ruff check core plugins benchmarks tests tools

clean:
	rm -rf $(VENV) zoo-results .pytest_cache
