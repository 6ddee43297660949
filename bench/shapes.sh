#!/usr/bin/env bash
# `make bench`: the ingest benchmark (bench/ingest.sh, the runner next to DuckDB, taking turns)
# on both shapes of drops at 1x and 4x: SHAPES (default "quarter-hour hourly") x SIZES (tenants,
# default "500 2000"), then one table of the reference job (both ingests, tenant_activity_daily,
# tenants) across them. Each configuration's full report (stages, CPU outside them, peak RSS)
# is printed as it ends and kept in $OUT (default /tmp/runner-bench-shapes).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=$HOME/.cache/runner/target}"
SHAPES=${SHAPES:-quarter-hour hourly}
SIZES=${SIZES:-500 2000}
OUT=${OUT:-/tmp/runner-bench-shapes}
PROFILE=${PROFILE:-release}
[ -n "${RUNNER_BIN:-}" ] || cargo build --profile "$PROFILE" --quiet
export RUNNER_BIN=${RUNNER_BIN:-$CARGO_TARGET_DIR/$PROFILE/runner}
mkdir -p "$OUT"
for size in $SIZES; do
  for shape in $SHAPES; do
    echo "== shape $shape, $size tenants ==" >&2
    SHAPE=$shape TENANTS=$size bash bench/ingest.sh | tee "$OUT/$shape-$size.txt"
  done
done
echo
echo "reference job (ingest both streams, tenant_activity_daily, tenants), medians; runner $RUNNER_BIN"
printf '%-13s %7s %10s %10s %7s %16s\n' shape tenants "runner s" "DuckDB s" ratio "peak RSS MiB r/d"
for size in $SIZES; do
  for shape in $SHAPES; do
    f="$OUT/$shape-$size.txt"
    r=$(awk '$1 == "reference" && $2 == "runner" {print $3, $6}' "$f")
    d=$(awk '$1 == "reference" && $2 == "duckdb" {print $3, $6}' "$f")
    ratio=$(awk '$1 == "reference" && $2 == "runner/duckdb" {print $4}' "$f")
    printf '%-13s %7s %10s %10s %7s %16s\n' "$shape" "$size" "${r% *}" "${d% *}" "$ratio" "${r#* } / ${d#* }"
  done
done
