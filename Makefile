# The two commands of README.md: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: run test install lint typecheck importlint unit pytest bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

## Start the whole platform on embedded defaults (SQLite, local storage) at http://127.0.0.1:8000
run: $(STAMP)
	$(BIN)/konfer up

## Install everything the tests need, start PostgreSQL/Redis/MinIO on loopback, run every check
test: $(STAMP)
	bash scripts/install-test-deps.sh
	bash scripts/with-services.sh $(MAKE) --no-print-directory lint typecheck importlint pytest

lint:
	$(BIN)/ruff check core api sfu cli operator ai tests bench
	$(BIN)/ruff format --check core api sfu cli operator ai tests bench

typecheck:
	$(BIN)/mypy -p konfer.core -p konfer.api -p konfer.sfu -p konfer.cli -p konfer.operator -p konfer.ai

importlint:
	$(BIN)/lint-imports

pytest:
	KONFER_TEST_REQUIRE_SERVICES=1 $(BIN)/pytest -q -p no:cacheprovider

bench: $(STAMP)
	bash scripts/install-test-deps.sh
	bash scripts/with-services.sh $(BIN)/python bench/api.py
	bash scripts/with-services.sh $(BIN)/python bench/signaling.py
	$(BIN)/python bench/sfu.py
	bash scripts/with-services.sh $(BIN)/python bench/browser.py
	bash scripts/with-services.sh $(BIN)/python bench/media.py
	$(BIN)/python bench/recording.py
	$(BIN)/python bench/operator.py
	bash scripts/with-services.sh $(BIN)/python bench/asr.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
