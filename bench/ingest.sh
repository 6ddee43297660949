#!/usr/bin/env bash
# Ingest benchmark: the runner next to DuckDB on the same Firehose drops, taking turns.
#
#   make bench                         # both drop shapes, 500 and 2,000 tenants (bench/shapes.sh)
#   bash bench/ingest.sh               # one: the seed's sizing, 500 tenants x 10 users x 90 days
#   TENANTS=2000 bash bench/ingest.sh  # four times larger
#   SHAPE=hourly bash bench/ingest.sh  # many small objects: one per stream per arrival hour
#   REPS=5 make bench                  # repetitions of each engine (default 3); medians shown
#
# Two shapes of drops (SHAPE): `quarter-hour` (default) closes an object every 15 minutes of
# arrivals, from tenants whose events are mostly sessions (`runner simulate`'s default mix);
# `hourly` is issue 27's shape: one object per stream per arrival hour, 24 a day each, from a
# job-heavy producer (`--mix jobs`: about three events in four are job events, the companies
# stream written with a space after `:` and `,`). Both are clean newline-delimited JSON
# (`--framing ndjson`), half of the objects GZIP, 1% delivered twice, so DuckDB's fastest correct reader applies:
# `read_json(format='newline_delimited', columns=..., ignore_errors=true)` (bench/duckdb_ingest.py).
# Two workloads, each engine in turn (runner, DuckDB, runner, ...):
#   ingest     both streams to deduplicated, date-partitioned Parquet;
#   reference  the same ingest, then tenant_activity_daily and tenants as of the last day.
# Prints the medians, the runner/DuckDB ratio, uncompressed MB/s, peak RSS and where the
# runner's ingest time went per stage. Needs PYTHON with duckdb.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=$HOME/.cache/runner/target}"
: "${PYTHON:=python3}"
TENANTS=${TENANTS:-500}
USERS=${USERS:-10}
DAYS=${DAYS:-90}
REPS=${REPS:-3}
SHAPE=${SHAPE:-quarter-hour}
case "$SHAPE" in
  quarter-hour) BUFFER=900; MIX=churn; WORK=${BENCH_DIR:-/tmp/runner-bench-$TENANTS} ;;
  hourly) BUFFER=3600; MIX=jobs; WORK=${BENCH_DIR:-/tmp/runner-bench-hourly-$TENANTS} ;;
  *) echo "SHAPE is quarter-hour or hourly, not $SHAPE" >&2; exit 2 ;;
esac
AS_OF=2026-11-20
REPO=$(pwd)

# RUNNER_BIN: measure a binary built earlier instead of building the working tree.
# PROFILE: the cargo profile to build (default release; bench-fast builds much faster, no LTO).
PROFILE=${PROFILE:-release}
[ -n "${RUNNER_BIN:-}" ] || cargo build --profile "$PROFILE" --quiet
BIN=${RUNNER_BIN:-$CARGO_TARGET_DIR/$PROFILE/runner}

# Bump the version when `runner simulate` changes what it writes, so old drops are made again.
SIMULATED="v2 ndjson $TENANTS $USERS $DAYS"
[ "$SHAPE" = quarter-hour ] || SIMULATED="$SIMULATED $SHAPE $MIX"
if [ "$(cat "$WORK/.simulated" 2>/dev/null)" != "$SIMULATED" ]; then
  rm -rf "$WORK"; mkdir -p "$WORK"
  echo "simulating $TENANTS tenants x $USERS users x $DAYS days into $WORK/drops ..." >&2
  "$BIN" simulate --out "$WORK/drops" --tenants "$TENANTS" --users-per-tenant "$USERS" --days "$DAYS" \
    --end-date "$AS_OF" --seed 1 --invalid-share 0 --buffer-seconds "$BUFFER" --framing ndjson --mix "$MIX"
  echo "$SIMULATED" > "$WORK/.simulated"
fi
cat > "$WORK/runner.toml" <<TOML
warehouse = "warehouse"
jobs_dir = "$REPO/jobs"
sql_dir = "$REPO/sql"
schemas_dir = "$REPO/schemas"
[sources.companies]
url = "drops/raw/companies"
[sources.bigdatajobs]
url = "drops/raw/bigdatajobs"
[scoring]
model = "$REPO/data/model/churn.json"
TOML

# Outputs of earlier runs are set aside and deleted only after the measurements: deleting
# thousands of files makes every file created in the next minute slower on an ext4 without a
# journal (this machine's root is one), and that would land on whichever engine runs next.
OLD="$WORK/.old-$$"
mkdir -p "$OLD"
trap 'rm -rf "$OLD"' EXIT
aside() { for d in "$@"; do if [ -e "$WORK/$d" ]; then mv "$WORK/$d" "$OLD/$d.$RANDOM$RANDOM"; fi; done; }

# Both engines read the drops from the page cache: warm it once.
find "$WORK/drops" -type f -exec cat {} + > /dev/null

: > "$WORK/ingest.measured"
# One measured run: LABEL WORKLOAD CMD...; its JSON line goes to ingest.measured, its stdout to
# $WORK/LABEL-WORKLOAD.out.
measure() {
  local label=$1 workload=$2; shift 2
  sync
  "$PYTHON" bench/measure.py "$label" -- "$@" > "$WORK/$label-$workload.out" 2> "$WORK/$label-$workload.err" \
    || { cat "$WORK/$label-$workload.err" >&2; exit 1; }
  grep '^{"label"' "$WORK/$label-$workload.err" | sed "s/^{/{\"workload\": \"$workload\", /" >> "$WORK/ingest.measured"
  # Keep the runner's per-job JSON of every run for the stage table.
  if [ "$label" = runner ]; then cat "$WORK/$label-$workload.out" >> "$WORK/runner-$workload.jsonl"; echo >> "$WORK/runner-$workload.jsonl"; fi
}
rm -f "$WORK"/runner-*.jsonl
INGEST="ingest_bigdatajobs ingest_companies"
for rep in $(seq "$REPS"); do
  echo "repetition $rep of $REPS ..." >&2
  aside warehouse duckdb
  measure runner ingest "$BIN" --config "$WORK/runner.toml" --quiet run $INGEST --format json
  measure duckdb ingest "$PYTHON" bench/duckdb_ingest.py "$WORK/drops" "$WORK/duckdb"
  aside warehouse duckdb
  measure runner reference "$BIN" --config "$WORK/runner.toml" --quiet run $INGEST tenant_activity_daily tenants --at "$AS_OF" --format json
  measure duckdb reference "$PYTHON" bench/duckdb_ingest.py "$WORK/drops" "$WORK/duckdb" --as-of "$AS_OF"
done

"$PYTHON" - "$WORK" "$SHAPE" "$TENANTS" <<'PY'
import json, statistics, sys
work = sys.argv[1]
print(f"shape {sys.argv[2]}, {sys.argv[3]} tenants")
runs = [json.loads(l) for l in open(f"{work}/ingest.measured")]
def jobs_of(workload):
    text = open(f"{work}/runner-{workload}.jsonl").read()
    dec, out, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        obj, i = dec.raw_decode(text, i)
        out.append(obj)
    return out  # one list of job metrics per run
ingest_runs = jobs_of("ingest")
first = [j for j in ingest_runs[0] if j["kind"] == "ingest"]
records = sum(j["records"] for j in first)
mb = sum(j["bytes_uncompressed"] for j in first) / 1e6
objects = sum(j["objects"] for j in first)
valid = sum(j["valid"] for j in first)
duck_rows = {l.split(":")[0]: int(l.split(": ")[1].split()[0]) for l in open(f"{work}/duckdb-ingest.out") if ": " in l}
print(f"drops: {objects:,} objects, {records:,} records, {mb:,.0f} MB uncompressed JSON; "
      f"rows written: runner {valid:,}, duckdb {sum(duck_rows.values()):,}")
print(f"{len(runs) // 4} runs of each engine per workload, taking turns; medians")
print(f"{'workload':10} {'engine':7} {'seconds':>8} {'MB/s':>7} {'CPU s':>6} {'peak RSS MiB':>13}  each run (s)")
med = {}
for workload in ("ingest", "reference"):
    for label in ("runner", "duckdb"):
        mine = [r for r in runs if r["workload"] == workload and r["label"] == label]
        secs = statistics.median(r["seconds"] for r in mine)
        med[workload, label] = secs
        rss = max(r["peak_rss_mib"] for r in mine)
        cpu = statistics.median(r["user_s"] + r["sys_s"] for r in mine)
        each = " ".join(f"{r['seconds']:.2f}" for r in mine)
        print(f"{workload:10} {label:7} {secs:8.2f} {mb / secs:7.1f} {cpu:6.1f} {rss:13.1f}  {each}")
    print(f"{workload:10} runner/duckdb = {med[workload, 'runner'] / med[workload, 'duckdb']:.2f}")

# Stages of the runner's median ingest run, both streams added up.
measured = [r for r in runs if r["workload"] == "ingest" and r["label"] == "runner"]
order = sorted(range(len(measured)), key=lambda i: measured[i]["seconds"])
m = order[len(order) // 2]
mid, usage = ingest_runs[m], measured[m]
stages = {}
for j in mid:
    if j["kind"] == "ingest":
        for k, v in j["stages"].items():
            stages[k[:-2]] = stages.get(k[:-2], 0.0) + v
process_cpu = usage["user_s"] + usage["sys_s"]
cpu_stages = ("inflate", "parse", "dedup", "encode")
print(f"runner ingest stages, median run ({usage['seconds']:.2f} s wall; CPU {process_cpu:.2f} s = "
      f"{usage['user_s']:.2f} user + {usage['sys_s']:.2f} system):")
for k, v in stages.items():
    if k in cpu_stages:
        print(f"  {k:8} {v:7.2f} s CPU  {100 * v / process_cpu:5.1f}% of the CPU time")
    else:
        print(f"  {k:8} {v:7.2f} s wall, summed over objects and batches (overlaps the CPU stages)")
other = process_cpu - sum(stages[k] for k in cpu_stages)
print(f"  {'other':8} {other:7.2f} s CPU  {100 * other / process_cpu:5.1f}% (system calls, threads waking, "
      "allocation outside the stages, the ledger)")
PY
