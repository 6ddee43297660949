#!/usr/bin/env bash
# Hostile objects benchmark (issue 26): five days of ordinary drops plus three objects no
# delivery stream wrote, ingested with `/usr/bin/time -v`; prints wall time and peak RSS.
#
#   bash bench/hostile.sh                  # builds the bench-fast profile (release, no LTO)
#   RUNNER_BIN=path/to/runner bash bench/hostile.sh
#
# The objects, in the bigdatajobs source among the day's drops:
#   - a GZIP object of about 1 MB that inflates to 1 GiB of zero bytes;
#   - 2 MB of records that each open a brace and never close it, one per line;
#   - one line of 100 MB.
# Targets: under 10 s, and a peak RSS of at most 512 MiB plus the batch bound
# (ingest.max_bytes_per_batch, 64 MiB by default).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=$HOME/.cache/runner/target}"
PROFILE=${PROFILE:-bench-fast}
[ -n "${RUNNER_BIN:-}" ] || cargo build --profile "$PROFILE" --quiet
BIN=${RUNNER_BIN:-$CARGO_TARGET_DIR/$PROFILE/runner}
WORK=${BENCH_DIR:-/tmp/runner-bench-hostile}
rm -rf "$WORK"; mkdir -p "$WORK"
REPO=$(pwd)
"$BIN" --quiet simulate --out "$WORK/drops" --tenants 50 --users-per-tenant 5 --days 5 --end-date 2026-11-20 --seed 3 >/dev/null
HOUR="$WORK/drops/raw/bigdatajobs/2026/11/20/13"
mkdir -p "$HOUR"
python3 - "$HOUR" <<'PY'
import gzip, sys
hour = sys.argv[1]
name = lambda n, ext="": f"{hour}/bigdatajobs-1-2026-11-20-13-00-00-00000000-0000-4000-8000-{n:012}{ext}"
with gzip.open(name(901, ".gz"), "wb", compresslevel=9) as f:
    block = bytes(1 << 20)
    for _ in range(1024):
        f.write(block)
line = b'{"event_type":"job_submitted","companyID":"c","open":"never closes\n'
with open(name(902), "wb") as f:
    f.write(line * ((2 << 20) // len(line)))
with open(name(903), "wb") as f:
    f.write(b'{"x":"' + b"z" * (100 << 20) + b'"}\n')
PY
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
ls -l "$HOUR" | awk '/-00000000090/ {print "hostile object:", $5, "bytes", $9}' >&2
cd "$WORK"
/usr/bin/time -v "$BIN" --config runner.toml run --no-lock ingest_bigdatajobs ingest_companies --format json \
  >"$WORK/summary.json" 2>"$WORK/time.txt" || { cat "$WORK/time.txt" >&2; exit 1; }
wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORK/time.txt")
rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt")
echo "hostile ingest: wall $wall, peak RSS $((rss / 1024)) MiB"
"$BIN" --config runner.toml query "SELECT reason_code, count(*) AS n, max(length(raw)) AS longest_raw FROM quarantine GROUP BY reason_code ORDER BY reason_code"
