# The two set-up commands of the README: `make demo` and `make test`.
# Each creates .venv if needed and installs layerloom into it (editable) first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= build/demo

.PHONY: demo test test-slow soak lint install clean

$(STAMP): pyproject.toml examples/winograd_engine/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	# The example engine plugin, installed from its own folder as a user's package would be.
	$(BIN)/python -m pip install -q --no-deps -e examples/winograd_engine
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py --out $(DEMO_OUT)

# Default suite (under 10 minutes); the suites marked slow are run by test-slow, which CI calls too.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 tests

# Only the suites marked slow (CI runs `make test` then this); "no tests" (exit 5) is fine.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m slow tests || test $$? -eq 5

# The files with property tests, slow ones included, with 400 drawn examples per test instead
# of 15-30 and a fresh seed: a bug hunt to run before a release (not in CI).
soak: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "" --hypothesis-profile=soak $$(grep -l "@given" tests/*.py)

lint: $(STAMP)
	$(BIN)/ruff check compiler dialects passes backends tests benchmarks examples
	$(BIN)/mypy

clean:
	rm -rf build $(VENV)
