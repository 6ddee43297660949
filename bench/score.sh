#!/usr/bin/env bash
# Scoring benchmark: the 10,000 companies of data/companies.csv against `runner model serve` on
# loopback, through the scoring job's client: batched /invocations next to one /assessChurn
# request per company (the seed's pattern). Prints companies/s and p50/p99 latency per call.
#
#   make bench-score
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=$HOME/.cache/runner/target}"
PROFILE=${PROFILE:-release}
[ -n "${RUNNER_BIN:-}" ] || cargo build --profile "$PROFILE" --quiet
BIN=${RUNNER_BIN:-$CARGO_TARGET_DIR/$PROFILE/runner}
PORT=${PORT:-18080}
"$BIN" --quiet model serve --port "$PORT" --model data/model/churn.json 2> /tmp/runner-bench-serve.err &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  grep -q serving /tmp/runner-bench-serve.err 2>/dev/null && break
  sleep 0.1
done
echo "batch_rows=${BATCH_ROWS:-1000} concurrency=${CONCURRENCY:-8}, server: $(cat /tmp/runner-bench-serve.err)"
"$BIN" --quiet model bench --url "http://127.0.0.1:$PORT" --data data/companies.csv \
  --batch-rows "${BATCH_ROWS:-1000}" --concurrency "${CONCURRENCY:-8}"
