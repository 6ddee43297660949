#!/usr/bin/env bash
# Ingest benchmark: runner next to DuckDB on the same Firehose drops, in the same run.
#
#   make bench                         # the seed's sizing: 500 tenants x 10 users x 90 days
#   TENANTS=2000 make bench            # four times larger
#
# Prints events/s, uncompressed MB/s and peak RSS for both. Needs PYTHON with duckdb.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=$HOME/.cache/runner/target}"
: "${PYTHON:=python3}"
TENANTS=${TENANTS:-500}
USERS=${USERS:-10}
DAYS=${DAYS:-90}
WORK=${BENCH_DIR:-/tmp/runner-bench-$TENANTS}
REPO=$(pwd)

# RUNNER_BIN: measure a binary built earlier instead of building the working tree.
# PROFILE: the cargo profile to build (default release; bench-fast builds much faster, no LTO).
PROFILE=${PROFILE:-release}
[ -n "${RUNNER_BIN:-}" ] || cargo build --profile "$PROFILE" --quiet
BIN=${RUNNER_BIN:-$CARGO_TARGET_DIR/$PROFILE/runner}

if [ ! -f "$WORK/.simulated" ]; then
  rm -rf "$WORK"; mkdir -p "$WORK"
  echo "simulating $TENANTS tenants x $USERS users x $DAYS days into $WORK/drops ..." >&2
  "$BIN" simulate --out "$WORK/drops" --tenants "$TENANTS" --users-per-tenant "$USERS" --days "$DAYS" \
    --end-date 2026-11-20 --seed 1 --invalid-share 0 --buffer-seconds 900
  touch "$WORK/.simulated"
fi
rm -rf "$WORK/warehouse" "$WORK/duckdb"
cat > "$WORK/runner.toml" <<TOML
warehouse = "warehouse"
jobs_dir = "$REPO/jobs"
sql_dir = "$REPO/sql"
schemas_dir = "$REPO/schemas"
[sources.companies]
url = "drops/raw/companies"
[sources.bigdatajobs]
url = "drops/raw/bigdatajobs"
TOML

# Drop the page cache's advantage for whichever runs second: warm both by reading once.
find "$WORK/drops" -type f -exec cat {} + > /dev/null

"$PYTHON" bench/measure.py runner -- "$BIN" --config "$WORK/runner.toml" --quiet run ingest_bigdatajobs ingest_companies --format json \
  > "$WORK/runner.json" 2> "$WORK/runner.err" || { cat "$WORK/runner.err"; exit 1; }
"$PYTHON" bench/measure.py duckdb -- "$PYTHON" bench/duckdb_ingest.py "$WORK/drops" "$WORK/duckdb" \
  > "$WORK/duckdb.out" 2> "$WORK/duckdb.err" || { cat "$WORK/duckdb.err"; exit 1; }

"$PYTHON" - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
jobs = json.load(open(f"{work}/runner.json"))
def measured(path):
    for line in open(path):
        if line.startswith('{"label"'):
            return json.loads(line)
r, d = measured(f"{work}/runner.err"), measured(f"{work}/duckdb.err")
records = sum(j["records"] for j in jobs)
valid = sum(j["valid"] for j in jobs)
mb = sum(j["bytes_uncompressed"] for j in jobs) / 1e6
objects = sum(j["objects"] for j in jobs)
duck_rows = sum(int(l.split(": ")[1].split()[0]) for l in open(f"{work}/duckdb.out") if ": " in l)
print(f"drops: {objects} objects, {records} records, {mb:.0f} MB uncompressed")
print(f"{'engine':8} {'seconds':>8} {'events/s':>12} {'MB/s':>8} {'peak RSS MiB':>13} {'rows written':>13}")
for name, m, rows in [("runner", r, valid), ("duckdb", d, duck_rows)]:
    print(f"{name:8} {m['seconds']:8.2f} {records / m['seconds']:12,.0f} {mb / m['seconds']:8.1f} {m['peak_rss_mib']:13.1f} {rows:13,}")
PY
