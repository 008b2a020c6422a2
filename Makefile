# Two entry points for a new user: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_CPU ?= 2.13.0

.PHONY: demo test lint typecheck unit bench bench-smoke clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# guidellm depends on torch: take the CPU build (no GPU is used), 1.5 GB less
	$(BIN)/python -m pip install --quiet 'torch==$(TORCH_CPU)'
	$(BIN)/python -m pip install --quiet -e '.[test,demo]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/wva-adapter demo --out demo-out

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/optimizer.py
	$(BIN)/python bench/scaler.py
	$(BIN)/python bench/load.py
	$(BIN)/python bench/policies.py

bench-smoke: $(STAMP)
	$(BIN)/python bench/optimizer.py --smoke
	$(BIN)/python bench/scaler.py --smoke
	$(BIN)/python bench/load.py --smoke
	$(BIN)/python bench/policies.py --smoke

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
