# tiket — two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto')

.PHONY: run test setup proto lint bench clean

run: setup
	$(BIN)/tiket up --seed

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m libs.proto.generate --check
	$(BIN)/pytest

setup: $(STAMP) gen/.stamp

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed: install python3.11 (apt-get install python3.11 python3.11-venv)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

gen/.stamp: $(PROTOS) $(STAMP) libs/proto/generate.py
	$(BIN)/python -m libs.proto.generate
	touch $@

proto:
	$(BIN)/python -m libs.proto.generate

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python -m bench.holds

clean:
	rm -rf $(VENV) gen .pytest_cache
