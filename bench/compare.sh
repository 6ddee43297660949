#!/usr/bin/env bash
# A/B of two runner binaries on the ingest benchmark's drops, taking turns: the ingest of both
# streams into a new warehouse, then the SQL DAG (a first build, on the warehouse it just
# ingested). Prints each run and the medians. For "within noise of before" checks of a change:
#
#   bench/compare.sh /path/to/runner-before /path/to/runner-after     # REPS (default 5), TENANTS
#
# Each side reads jobs/, sql/ and schemas/ from its own checkout (A_REPO, B_REPO; default this
# one), so a build of an older commit runs its own job files.
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1 B=$2
TENANTS=${TENANTS:-500}
REPS=${REPS:-5}
WORK=${BENCH_DIR:-/tmp/runner-bench-$TENANTS}
: "${PYTHON:=python3}"
[ -f "$WORK/.simulated" ] || { echo "run the ingest benchmark first (make bench, TENANTS=$TENANTS)" >&2; exit 1; }
A_REPO=${A_REPO:-$(pwd)} B_REPO=${B_REPO:-$(pwd)}
for side in a b; do
  if [ "$side" = a ]; then REPO=$A_REPO; else REPO=$B_REPO; fi
  mkdir -p "$WORK/ab-$side"
  cat > "$WORK/ab-$side/runner.toml" <<TOML
warehouse = "warehouse"
jobs_dir = "$REPO/jobs"
sql_dir = "$REPO/sql"
schemas_dir = "$REPO/schemas"
[sources.companies]
url = "$WORK/drops/raw/companies"
[sources.bigdatajobs]
url = "$WORK/drops/raw/bigdatajobs"
[scoring]
model = "$REPO/data/model/churn.json"
TOML
done
bin() { if [ "$1" = a ]; then echo "$A"; else echo "$B"; fi; }
# Seconds of one run; a failed run stops the comparison with its error.
secs() {
  local err; err=$(mktemp)
  "$PYTHON" bench/measure.py "$1" -- "${@:2}" > /dev/null 2> "$err" || { cat "$err" >&2; exit 1; }
  grep '^{"label"' "$err" | "$PYTHON" -c 'import json,sys; print(json.loads(sys.stdin.read())["seconds"])'
  rm -f "$err"
}
: > "$WORK/ab.measured"
for rep in $(seq "$REPS"); do
  for side in a b; do
    d="$WORK/ab-$side"
    rm -rf "$d/warehouse"
    s=$(secs ingest "$(bin $side)" --config "$d/runner.toml" --quiet run --no-lock ingest_bigdatajobs ingest_companies)
    echo "ingest $side $s" >> "$WORK/ab.measured"
    s=$(secs dag "$(bin $side)" --config "$d/runner.toml" --quiet run --no-lock tenant_activity_daily jobs_daily tenants churn_features --at 2026-11-20)
    echo "dag $side $s" >> "$WORK/ab.measured"
  done
done
"$PYTHON" - "$WORK/ab.measured" "$A" "$B" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
print(f"A = {sys.argv[2]}\nB = {sys.argv[3]}")
for what in ("ingest", "dag"):
    for side in ("a", "b"):
        s = [float(r[2]) for r in rows if r[0] == what and r[1] == side]
        print(f"{what:7} {side.upper()}  median {statistics.median(s):6.2f} s   runs {' '.join(f'{x:.2f}' for x in s)}")
PY
