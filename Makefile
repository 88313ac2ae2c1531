# smsgate — the two commands: `make serve` and `make test`.
# Both create .venv and install the project (editable, with dev tools) on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PIP    := $(BIN)/python -m pip --disable-pip-version-check
# bench/ is optional; lint and type-check it when it is there.
PY_SRC := server tests clients/python $(wildcard bench)

TS       := clients/typescript
TS_STAMP := $(TS)/node_modules/.installed-stamp

.PHONY: serve test ts-deps lint typecheck gen check-gen format bench bench-quick bench-vendor bench-cluster chaos cluster clean

# Two distributions: the client (clients/python), which the server's pyproject.toml
# requires by name, and the server with its dev tools.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(None if sys.version_info >= (3, 11, 3) else "smsgate needs Python 3.11.3 or newer; found " + sys.version.split()[0] + " (set PYTHON=/path/to/python3.11)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -e clients/python -e '.[dev]'
	touch $@

## Run the service: embedded Redis in .smsgate/, simulator provider, gRPC on 127.0.0.1:50051.
serve: $(STAMP)
	$(BIN)/smsgate-server

## Run every check: proto lint/format, ruff, layer contracts, mypy, pytest (stub freshness is a test).
test: lint typecheck ts-deps
	$(BIN)/pytest -q

# The TypeScript client's packages, from its committed lockfile (npm ci also compiles it).
# Without npm, its tests in pytest are skipped and say why.
ts-deps:
	@if command -v npm >/dev/null 2>&1; then $(MAKE) --no-print-directory $(TS_STAMP); \
	else echo "npm not found: the TypeScript client's tests will be skipped (install Node 20+)"; fi

$(TS_STAMP): $(TS)/package-lock.json $(TS)/package.json
	cd $(TS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# lint-imports checks the layer contracts in pyproject.toml; it is fast enough to skip its cache.
lint: $(STAMP)
	$(BIN)/buf lint
	$(BIN)/buf format --diff --exit-code
	$(BIN)/ruff check $(PY_SRC)
	$(BIN)/ruff format --check $(PY_SRC)
	$(BIN)/lint-imports --no-cache --no-logo

typecheck: $(STAMP)
	$(BIN)/mypy server/smsgate_server clients/python/smsgate tests $(wildcard bench)

## Regenerate the Python stubs and the TypeScript client's code from proto/ (commit the result).
gen: $(STAMP) ts-deps
	$(BIN)/python scripts/gen_protos.py clients/python
	$(BIN)/buf generate

## Fail when the committed stubs differ from a fresh generation.
check-gen: $(STAMP)
	$(BIN)/pytest -q tests/test_proto.py

## Format Python and protos in place.
format: $(STAMP)
	$(BIN)/ruff format $(PY_SRC)
	$(BIN)/ruff check --fix $(PY_SRC)
	$(BIN)/buf format -w

bench: $(STAMP)
	$(BIN)/python -m bench

bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

## End-to-end delivered/s through the Tencent fake beside the simulator (about a minute).
bench-vendor: $(STAMP)
	$(BIN)/python -m bench.vendor

## smsgate on the 3-master Redis Cluster beside one Redis server (api and worker
## processes apart), a scaling table and the 10k/100k msg/s projection (about 10 minutes).
bench-cluster: $(STAMP)
	$(BIN)/python -m bench.cluster

## The fault suite (README "Fault suite"): 100,000 messages through three server kills
## and a Redis kill, then a longer fuzz of every RPC. Bounded; a few minutes on 2 cores.
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos
	CHAOS_FUZZ_EXAMPLES=300 $(BIN)/pytest -q tests/test_fuzz.py

## A local Redis Cluster (3 masters, 3 replicas) on free loopback ports until Ctrl-C;
## prints the SMSGATE_REDIS_URL for smsgate replicas (README "Replicas on a Redis Cluster").
cluster: $(STAMP)
	$(BIN)/python scripts/cluster.py

clean:
	rm -rf $(VENV) $(TS)/node_modules $(TS)/dist .smsgate .pytest_cache .mypy_cache .ruff_cache .hypothesis
