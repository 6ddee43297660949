#!/usr/bin/env bash
# Calendar benchmark: a new day, a no-op `run --all`, a one-day query and a snapshot query on
# warehouses with 30, 360 and 1,080 days of history, locally and on moto's S3 server; then the
# reference job with 25 ms added to every S3 request. See bench/years.py.
#
#   make bench-calendar
#   DAYS=30,360 REPS=3 WHERE=local,s3 PROFILE=bench-fast make bench-calendar
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=$HOME/.cache/runner/target}"
: "${PYTHON:=python3}"
PROFILE=${PROFILE:-release}
cargo build --profile "$PROFILE" --quiet --bin runner
DIR=$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
BIN=${RUNNER_BIN:-$CARGO_TARGET_DIR/$DIR/runner}
"$PYTHON" bench/years.py "$BIN"
