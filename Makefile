# smsgate — the two commands: `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PROTOS := $(wildcard proto/smsgate/v1/*.proto)

.PHONY: serve test lint typecheck gen check-gen bench bench-quick clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11, 3), "smsgate needs Python 3.11.3+, found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

## Run the service: embedded Redis, simulator provider.
serve: $(STAMP)
	$(BIN)/smsgate-server

## Run every check: proto lint/format, generated-code freshness, ruff, mypy, pytest.
test: $(STAMP)
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code
	$(BIN)/ruff check server tests bench clients/python
	$(BIN)/ruff format --check server tests bench clients/python
	$(BIN)/mypy server/smsgate_server clients/python/smsgate tests bench
	$(BIN)/pytest -q

## Regenerate the Python stubs from proto/.
gen: $(STAMP)
	$(BIN)/python scripts/gen_protos.py clients/python

bench: $(STAMP)
	$(BIN)/python -m bench

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) .smsgate .pytest_cache .mypy_cache .ruff_cache
