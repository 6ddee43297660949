#!/usr/bin/env bash
# State benchmark: a no-op ingest and a one-drop ingest on a warehouse with COMMITS (default
# 100,000) committed batches per stream next to one with 100, locally and on moto's S3 server;
# then the state RUNS (default 1,000) consecutive `run --all` leave. See bench/state.py.
#
#   make bench-state
#   COMMITS=100000 REPS=3 RUNS=1000 WHERE=local,s3 make bench-state
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=$HOME/.cache/runner/target}"
: "${PYTHON:=python3}"
PROFILE=${PROFILE:-release}
cargo build --profile "$PROFILE" --quiet --bin runner --example state_warehouse
BIN=${RUNNER_BIN:-$CARGO_TARGET_DIR/$PROFILE/runner}
"$PYTHON" bench/state.py "$BIN" "$CARGO_TARGET_DIR/$PROFILE/examples/state_warehouse"
