# The two commands of the README's Quick start, and the checks CI runs.
# Everything installs into ./.venv from PyPI; nothing else is needed on the machine.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
# The Quix Streams peer of `salespulse bench` has an environment of its own (see bench/peer-requirements.txt).
PEER_STAMP := $(VENV)/peer/.installed-$(shell sha1sum bench/peer-requirements.txt | cut -c1-12)

.PHONY: install demo test test-fast lint format clean bench bench-smoke

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

$(PEER_STAMP): bench/peer-requirements.txt $(STAMP)
	$(PYTHON) -m venv $(VENV)/peer
	$(VENV)/peer/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/peer/bin/python -m pip install --quiet -r bench/peer-requirements.txt
	rm -f $(VENV)/peer/.installed-*
	touch $@

install: $(STAMP) $(PEER_STAMP)

demo: $(STAMP)
	$(BIN)/salespulse demo --duration 60

test: $(STAMP) $(PEER_STAMP)
	$(BIN)/pytest

# The full benchmark (README "Performance"); bench-smoke is the seconds-long version CI runs as a test.
bench: $(STAMP) $(PEER_STAMP)
	$(BIN)/salespulse bench --events 200000 --reps 3 --workers 2

bench-smoke: $(STAMP) $(PEER_STAMP)
	$(BIN)/salespulse bench --events 2000 --latency-seconds 2

test-fast: $(STAMP)
	$(BIN)/pytest tests/unit tests/deploy

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .salespulse .pytest_cache .mypy_cache .ruff_cache
