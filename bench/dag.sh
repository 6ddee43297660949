#!/usr/bin/env bash
# SQL DAG benchmark: runner's batch jobs for one as-of date next to DuckDB running the same SQL
# over the same Parquet, in the same run. Uses the drops of the ingest benchmark.
#
#   make bench-dag                 # 500 tenants x 10 users x 90 days
#   TENANTS=2000 make bench-dag    # four times larger
#   REPS=5 make bench-dag          # repetitions (default 3); the table shows medians
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=$HOME/.cache/runner/target}"
: "${PYTHON:=python3}"
TENANTS=${TENANTS:-500}
REPS=${REPS:-3}
WORK=${BENCH_DIR:-/tmp/runner-bench-$TENANTS}
AS_OF=2026-11-20
[ -f "$WORK/.simulated" ] || { echo "run the ingest benchmark first (make bench, TENANTS=$TENANTS)" >&2; exit 1; }
# RUNNER_BIN: measure a binary built earlier instead of building the working tree.
# PROFILE: the cargo profile to build (default release; bench-fast builds much faster, no LTO).
PROFILE=${PROFILE:-release}
[ -n "${RUNNER_BIN:-}" ] || cargo build --profile "$PROFILE" --quiet
BIN=${RUNNER_BIN:-$CARGO_TARGET_DIR/$PROFILE/runner}
JOBS="tenant_activity_daily jobs_daily tenants churn_features"

# Outputs of earlier runs are set aside and deleted only after the measurements: deleting
# thousands of files makes every file or folder created in the next minute slower on an ext4
# without a journal (it skips recently freed inodes; this machine's root is one). Measured with
# `perf`: 14% of the runner's CPU time in the DAG went to that scan after an `rm -rf`.
OLD="$WORK/.old-$$"
mkdir -p "$OLD"
trap 'rm -rf "$OLD"' EXIT
aside() { for d in "$@"; do if [ -e "$WORK/$d" ]; then mv "$WORK/$d" "$OLD/$d.$RANDOM$RANDOM"; fi; done; }

# One ingest; each repetition starts from a copy of its warehouse, so the incremental daily
# jobs build all 90 days every time. The engines take turns on the same files.
aside warehouse warehouse.ingested duckdb-dag
"$BIN" --config "$WORK/runner.toml" --quiet run ingest_bigdatajobs ingest_companies > /dev/null
cp -a "$WORK/warehouse" "$WORK/warehouse.ingested"
: > "$WORK/dag.measured"
for rep in $(seq "$REPS"); do
  if [ "$rep" -gt 1 ]; then aside warehouse duckdb-dag; cp -a "$WORK/warehouse.ingested" "$WORK/warehouse"; fi
  sync
  "$PYTHON" bench/measure.py runner -- "$BIN" --config "$WORK/runner.toml" --quiet run $JOBS --at "$AS_OF" --format json \
    > "$WORK/dag.json" 2> "$WORK/dag.err" || { cat "$WORK/dag.err"; exit 1; }
  grep '^{"label"' "$WORK/dag.err" >> "$WORK/dag.measured"
  "$PYTHON" bench/measure.py duckdb -- "$PYTHON" bench/duckdb_dag.py "$WORK/warehouse" "$WORK/duckdb-dag" "$AS_OF" \
    > "$WORK/duckdb-dag.out" 2> "$WORK/duckdb-dag.err" || { cat "$WORK/duckdb-dag.err"; exit 1; }
  grep '^{"label"' "$WORK/duckdb-dag.err" >> "$WORK/dag.measured"
done
"$PYTHON" - "$WORK" <<'PY'
import json, statistics, sys
work = sys.argv[1]
runs = [json.loads(line) for line in open(f"{work}/dag.measured")]
jobs = json.load(open(f"{work}/dag.json"))
rows = {j["job"]: j["rows_out"] for j in jobs}
print(f"events in: job_events + tenant_events of {work}; {len(runs) // 2} runs of each engine, taking turns")
print(f"{'engine':8} {'seconds':>8} {'peak RSS MiB':>13}  {'each run (s)':24} rows out")
for label, out in [("runner", str(rows)), ("duckdb", open(f"{work}/duckdb-dag.out").read().strip().replace(chr(10), ", "))]:
    mine = [r for r in runs if r["label"] == label]
    secs = statistics.median(r["seconds"] for r in mine)
    rss = max(r["peak_rss_mib"] for r in mine)
    each = " ".join(f"{r['seconds']:.2f}" for r in mine)
    print(f"{label:8} {secs:8.2f} {rss:13.1f}  {each:24} {out}")
PY
