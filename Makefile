# One task file for people and CI (.ci/run calls `make test`).
# Builds go to a target folder outside the clone so later clones reuse it.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/runner/target
VENV ?= $(HOME)/.cache/runner/venv
PY := $(VENV)/bin/python
RUNNER := cargo run --quiet --

.PHONY: build demo dashboard image image-runtime image-base image-tools test venv browser fmt lint check unit golden bench bench-dag bench-cluster bench-state bench-calendar bench-score bench-discovery model serve sample schedules clean-warehouse

# The committed sample's last day: the demo runs as of it, so job30 and job90 cover the sample
# whatever today's date is.
SAMPLE_END := 2026-11-20

## The main job on the embedded default: ingest data/ into ./warehouse, then jobs per tenant per day and churn risk.
demo: build
	$(RUNNER) run --all --at $(SAMPLE_END)
	$(RUNNER) query --file sql/queries/jobs_per_tenant_per_day.sql
	$(RUNNER) query --file sql/queries/churn_risk.sql

## Build the runner, with cargo's progress on stderr (the first build compiles DataFusion and
## the AWS SDKs: minutes on a laptop; later ones are incremental).
build:
	@echo "building runner (the first build takes several minutes; cargo shows its progress)" >&2
	cargo build

## The dashboard on the demo's warehouse (after `make demo`): http://127.0.0.1:8050/
dashboard:
	$(RUNNER) dashboard --port 8050

## The container image the exported task definition runs, with docker or podman (whichever the
## machine has; ENGINE=podman to choose). `make image` builds the binary in the image;
## `make image-runtime` puts an already built one (BIN) on the runtime base. Base images are
## build arguments: `make image-base` makes localhost/bookworm-base with mmdebstrap where no
## registry is reachable, then `make image-runtime RUNTIME_IMAGE=localhost/bookworm-base`.
IMAGE ?= runner:$(shell git describe --always --dirty 2>/dev/null || echo dev)
ENGINE ?= $(notdir $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null || echo docker))
# Podman on this kind of machine: Debian's runc (crun's setrlimit is refused) and the limits a
# container may set here.
ifeq ($(ENGINE),podman)
ENGINE_FLAGS ?= --runtime runc
BUILD_FLAGS ?= --ulimit nofile=20000:20000 --ulimit nproc=4096:4096
endif
BUILD_ARGS := $(if $(RUNTIME_IMAGE),--build-arg RUNTIME_IMAGE=$(RUNTIME_IMAGE)) $(if $(BUILD_IMAGE),--build-arg BUILD_IMAGE=$(BUILD_IMAGE))
BIN ?= $(CARGO_TARGET_DIR)/release/runner
BASE_TAR := $(HOME)/.cache/runner/image/bookworm-base.tar
image:
	$(ENGINE) $(ENGINE_FLAGS) build $(BUILD_FLAGS) $(BUILD_ARGS) --target runtime -t $(IMAGE) -t runner:latest .
image-runtime:
	@test -x $(BIN) || { echo "no binary at $(BIN): cargo build --release, or BIN=path" >&2; exit 1; }
	mkdir -p .image && cp $(BIN) .image/runner
	$(ENGINE) $(ENGINE_FLAGS) build $(BUILD_FLAGS) $(BUILD_ARGS) --target prebuilt -t $(IMAGE) -t runner:latest .
image-base: $(BASE_TAR)
	$(ENGINE) $(ENGINE_FLAGS) image exists localhost/bookworm-base 2>/dev/null || $(ENGINE) $(ENGINE_FLAGS) import $(BASE_TAR) localhost/bookworm-base
$(BASE_TAR):
	mkdir -p $(dir $@)
	mmdebstrap --variant=minbase --format=tar --include=ca-certificates bookworm $@.partial && mv $@.partial $@

## What the image test needs: podman with runc, and mmdebstrap for its base (Debian's packages;
## sudo when not root). Where they cannot be installed, the image test says so and stops.
image-tools:
	@command -v podman >/dev/null && command -v mmdebstrap >/dev/null && command -v runc >/dev/null || { \
	  echo "installing Debian's podman, runc and mmdebstrap for the image test" >&2; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc mmdebstrap uidmap >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc mmdebstrap uidmap >/dev/null; } || \
	  echo "could not install podman: the image test will say so and stop" >&2; }

## The whole test suite: format, lint, offline validation, unit and integration tests.
## Clippy runs inside the test build (clippy-driver as the workspace's rustc wrapper, the way
## `cargo clippy` runs it), so the dependencies build once for lint and tests instead of once in
## check mode and again for the tests; a lint is an error that stops the build, as in `make lint`.
LINTED := RUSTC_WORKSPACE_WRAPPER=clippy-driver CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
test: venv browser image-tools fmt
	@command -v clippy-driver >/dev/null || { echo "clippy-driver not found: rustup component add clippy" >&2; exit 1; }
	$(LINTED) $(RUNNER) validate
	RUNNER_TEST_PYTHON=$(PY) $(LINTED) cargo test --all-targets

## Python with pyarrow and duckdb (the independent readers of the tests and the benchmark),
## moto's server (the AWS API emulator the AWS tests start on 127.0.0.1) and cfn-lint. moto 5.2
## answers Athena's StartQueryExecution with 404 (whichever protocol), so it stays below 5.2.
venv: $(VENV)/.ready-4
$(VENV)/.ready-4:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check pyarrow duckdb 'moto[server]>=5.1,<5.2' cfn-lint
	touch $@

## Headless Chromium for the dashboard test (Debian's package; sudo when not root).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium for the dashboard test" >&2; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; }

fmt:
	cargo fmt --all -- --check

lint:
	cargo clippy --all-targets -- -D warnings

check:
	cargo check --all-targets

unit:
	cargo test --lib

## Rewrite tests/golden/expected/*.csv from the current SQL (review the diff before committing).
golden:
	UPDATE_GOLDEN=1 cargo test --test golden --test scoring

## Rewrite scheduler/export/ (crontab, EventBridge, CloudFormation) from scheduler/schedules.toml.
schedules:
	UPDATE_GOLDEN=1 cargo test --test schedule committed_exports

## Ingest benchmark next to DuckDB, both drop shapes at 500 and 2,000 tenants (release build; see README "Benchmarks").
bench: venv
	PYTHON=$(PY) bash bench/shapes.sh

## SQL DAG benchmark next to DuckDB (after `make bench`, same TENANTS).
bench-dag: venv
	PYTHON=$(PY) bash bench/dag.sh

## Calendar benchmark: a new day, a no-op run and queries on 30, 360 and 1,080 days of history, locally and on S3 (moto).
bench-calendar: venv
	PYTHON=$(PY) bash bench/calendar.sh

## Cluster benchmark: the SQL DAG locally and on Ballista with one and two executors (after `make bench`).
bench-cluster: venv
	PYTHON=$(PY) bash bench/cluster.sh

## State benchmark: 100,000 committed batches next to 100, local and on moto; 1,000 runs' state.
bench-state: venv
	PYTHON=$(PY) bash bench/state.sh

## Scoring benchmark: batched next to one request per company, against `runner model serve`.
bench-score:
	bash bench/score.sh

## Discovery benchmark: DROPS (default 100000) drops in S3 (moto on 127.0.0.1), then one more.
bench-discovery: venv
	[ -n "$(RUNNER_BIN)" ] || cargo build --profile $${PROFILE:-release} --quiet
	$(PY) bench/discovery.py $${RUNNER_BIN:-$(CARGO_TARGET_DIR)/$${PROFILE:-release}/runner} $${DROPS:-100000}

## Retrain the churn model on the seed's companies (writes data/model/churn.json).
model:
	$(RUNNER) model train --data data/companies.csv

## The local churn endpoint on port 8080 (SageMaker container and API Gateway contracts).
serve:
	$(RUNNER) model serve --port 8080

## Regenerate the committed sample in data/drops (deterministic).
sample:
	rm -rf data/drops
	$(RUNNER) simulate --out data/drops --tenants 25 --users-per-tenant 5 --days 90 --end-date $(SAMPLE_END) --seed 42 --noise --buffer-seconds 900

clean-warehouse:
	rm -rf warehouse
