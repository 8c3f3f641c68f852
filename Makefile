# Two commands do everything on a fresh machine:
#   make bench   create the environment if missing, then run `zoo bench` on its default
#   make test    create the environment if missing, then run the test suite
# TORCH picks the torch requirement; the default takes the CPU wheel that lies on this disk.

PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: env bench test lint clean

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

lint: env
	$(BIN)/ruff check core plugins benchmarks tests

clean:
	rm -rf $(VENV) zoo-results .pytest_cache
