#!/usr/bin/env bash
# SQL DAG benchmark: runner's batch jobs for one as-of date next to DuckDB running the same SQL
# over the same Parquet, in the same run. Uses the drops of the ingest benchmark.
#
#   make bench-dag                 # 500 tenants x 10 users x 90 days
#   TENANTS=2000 make bench-dag    # four times larger
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=$HOME/.cache/runner/target}"
: "${PYTHON:=python3}"
TENANTS=${TENANTS:-500}
WORK=${BENCH_DIR:-/tmp/runner-bench-$TENANTS}
AS_OF=2026-11-20
[ -f "$WORK/.simulated" ] || { echo "run the ingest benchmark first (make bench, TENANTS=$TENANTS)" >&2; exit 1; }
# RUNNER_BIN: measure a binary built earlier instead of building the working tree.
[ -n "${RUNNER_BIN:-}" ] || cargo build --release --quiet
BIN=${RUNNER_BIN:-$CARGO_TARGET_DIR/release/runner}
JOBS="tenant_activity_daily jobs_daily tenants churn_features"

# A fresh ingest, then only the SQL jobs are measured.
rm -rf "$WORK/warehouse" "$WORK/duckdb-dag"
"$BIN" --config "$WORK/runner.toml" --quiet run ingest_bigdatajobs ingest_companies > /dev/null
"$PYTHON" bench/measure.py runner -- "$BIN" --config "$WORK/runner.toml" --quiet run $JOBS --at "$AS_OF" --format json \
  > "$WORK/dag.json" 2> "$WORK/dag.err" || { cat "$WORK/dag.err"; exit 1; }
"$PYTHON" bench/measure.py duckdb -- "$PYTHON" bench/duckdb_dag.py "$WORK/warehouse" "$WORK/duckdb-dag" "$AS_OF" \
  > "$WORK/duckdb-dag.out" 2> "$WORK/duckdb-dag.err" || { cat "$WORK/duckdb-dag.err"; exit 1; }
"$PYTHON" - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
def measured(path):
    for line in open(path):
        if line.startswith('{"label"'):
            return json.loads(line)
r, d = measured(f"{work}/dag.err"), measured(f"{work}/duckdb-dag.err")
jobs = json.load(open(f"{work}/dag.json"))
rows = {j["job"]: j["rows_out"] for j in jobs}
print(f"events in: job_events + tenant_events of {work}")
print(f"{'engine':8} {'seconds':>8} {'peak RSS MiB':>13}  rows out")
print(f"{'runner':8} {r['seconds']:8.2f} {r['peak_rss_mib']:13.1f}  {rows}")
print(f"{'duckdb':8} {d['seconds']:8.2f} {d['peak_rss_mib']:13.1f}  " + open(f"{work}/duckdb-dag.out").read().strip().replace(chr(10), ', '))
PY
