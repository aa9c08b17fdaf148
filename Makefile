# tiket — two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto')

.PHONY: run test setup proto lint format bench bench-fares bench-taps bench-fanout clean

## run: set everything up, start the whole mesh with demo data, serve in the foreground
run: setup
	$(BIN)/tiket up --seed

## test: set everything up, then lint, check generated code and run the whole suite
test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m libs.proto.generate --check
	$(BIN)/pytest

setup: $(STAMP) gen/.stamp

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "tiket needs Python 3.11 or newer: apt-get install python3.11 python3.11-venv"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

gen/.stamp: $(PROTOS) $(STAMP) libs/proto/generate.py
	$(BIN)/python -m libs.proto.generate
	touch $@

## proto: regenerate gen/ from protos/
proto: $(STAMP)
	$(BIN)/python -m libs.proto.generate
	touch gen/.stamp

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## bench: PlaceHold+CaptureHold through gRPC against pgbench on the same SQL
bench: setup
	$(BIN)/python -m bench.holds

## bench-fares: GetFare cached and uncached against pgbench on the same SELECT
bench-fares: setup
	$(BIN)/python -m bench.fares

## bench-taps: gate check-in/check-out pairs through the mesh against pgbench
bench-taps: setup
	$(BIN)/python -m bench.taps --rounds 3

## bench-fanout: notification and analytics keeping up with the taps load
bench-fanout: setup
	$(BIN)/python -m bench.fanout

clean:
	rm -rf $(VENV) .pytest_cache gen/.stamp
	find gen/tiket -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
