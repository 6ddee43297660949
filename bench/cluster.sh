#!/usr/bin/env bash
# Cluster benchmark: the SQL DAG (tenant_activity_daily, jobs_daily, tenants, churn_features for
# one as-of date, 90 days built from nothing) in this process, and on a Ballista cluster on this
# machine with one executor and with two, taking turns on copies of the same ingested warehouse.
#
#   make bench-cluster                 # the seed's sizing: 500 tenants x 10 users x 90 days
#   TENANTS=2000 make bench-cluster    # four times larger
#   REPS=5 make bench-cluster          # repetitions of each setup (default 3); medians shown
#
# Setups (2 cores here, so every setup has two task slots):
#   local        --engine local
#   ballista-1   one executor, --concurrency 2
#   ballista-2   two executors, --concurrency 1 each
# Besides wall time it prints where the cluster's time goes: the time the jobs spent in their
# queries (the rest is the catalog, the audit and publishing, the same on every setup), the
# runner's CPU (planning, results, publishing), the executors' CPU (scans, operators, shuffle),
# the shuffle bytes the executors wrote, and the fixed cost of one trivial query (submit,
# schedule, fetch). Uses the
# drops of `make bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${CARGO_TARGET_DIR:=$HOME/.cache/runner/target}"
: "${PYTHON:=python3}"
TENANTS=${TENANTS:-500}
REPS=${REPS:-3}
WORK=${BENCH_DIR:-/tmp/runner-bench-$TENANTS}
AS_OF=2026-11-20
PROFILE=${PROFILE:-release}
[ -n "${RUNNER_BIN:-}" ] || cargo build --profile "$PROFILE" --quiet
BIN=${RUNNER_BIN:-$CARGO_TARGET_DIR/$PROFILE/runner}
JOBS="tenant_activity_daily jobs_daily tenants churn_features"
[ -f "$WORK/.simulated" ] || { echo "run the ingest benchmark first (make bench, TENANTS=$TENANTS)" >&2; exit 1; }

OLD="$WORK/.old-$$"
PIDS=()
mkdir -p "$OLD"
stop_cluster() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; PIDS=(); }
trap 'stop_cluster; rm -rf "$OLD"' EXIT
aside() { for d in "$@"; do if [ -e "$WORK/$d" ]; then mv "$WORK/$d" "$OLD/$d.$RANDOM$RANDOM"; fi; done; }
port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done; echo "nothing listens on $1" >&2; exit 1; }
# CPU seconds (user + system) of the given processes so far.
cpu() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; awk -v t="$t" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}'; }

# start_cluster EXECUTORS CONCURRENCY: a scheduler and its executors, each a process.
start_cluster() {
  SCHED_PORT=$(port)
  "$BIN" cluster scheduler --port "$SCHED_PORT" 2>"$WORK/cluster-scheduler.log" & PIDS+=($!)
  wait_port "$SCHED_PORT"
  EXEC_PIDS=()
  for i in $(seq "$1"); do
    local fp gp; fp=$(port); gp=$(port)
    rm -rf "$WORK/shuffle-$i"
    "$BIN" cluster executor --scheduler "127.0.0.1:$SCHED_PORT" --port "$fp" --grpc-port "$gp" --concurrency "$2" \
      --work-dir "$WORK/shuffle-$i" 2>"$WORK/cluster-executor-$i.log" & PIDS+=($!); EXEC_PIDS+=($!)
    wait_port "$fp"
  done
}

aside warehouse warehouse.ingested
"$BIN" --config "$WORK/runner.toml" --quiet run ingest_bigdatajobs ingest_companies > /dev/null
cp -a "$WORK/warehouse" "$WORK/warehouse.ingested"
: > "$WORK/cluster.measured"
for rep in $(seq "$REPS"); do
  for setup in local ballista-1 ballista-2; do
    aside warehouse; cp -a "$WORK/warehouse.ingested" "$WORK/warehouse"; sync
    engine=(--engine local); EXEC_PIDS=()
    case $setup in
      ballista-1) start_cluster 1 2 ;;
      ballista-2) start_cluster 2 1 ;;
    esac
    [ "$setup" = local ] || engine=(--engine ballista --scheduler "df://127.0.0.1:$SCHED_PORT")
    # The fixed cost of a query on this setup: the best of three trivial ones.
    trivial=$(for _ in 1 2 3; do "$PYTHON" bench/measure.py q -- "$BIN" --config "$WORK/runner.toml" --quiet "${engine[@]}" \
      query "SELECT count(*) FROM job_events" --format csv 2>&1 >/dev/null | grep '^{"label"'; done \
      | "$PYTHON" -c 'import json,sys; print(min(json.loads(l)["seconds"] for l in sys.stdin))')
    before=$( [ ${#EXEC_PIDS[@]} -gt 0 ] && cpu "${EXEC_PIDS[@]}" || echo 0)
    "$PYTHON" bench/measure.py "$setup" -- "$BIN" --config "$WORK/runner.toml" --quiet "${engine[@]}" -vv \
      run $JOBS --at "$AS_OF" --format json > "$WORK/cluster-$setup.json" 2> "$WORK/cluster-$setup.err" \
      || { tail -20 "$WORK/cluster-$setup.err"; exit 1; }
    after=$( [ ${#EXEC_PIDS[@]} -gt 0 ] && cpu "${EXEC_PIDS[@]}" || echo 0)
    shuffle=$( (du -sb "$WORK"/shuffle-* 2>/dev/null || true) | awk '{s+=$1} END {print s+0}')
    queries=$(grep -c 'audit and publish' "$WORK/cluster-$setup.err" || true)
    query_ms=$(grep -o 'query [0-9]* ms' "$WORK/cluster-$setup.err" | awk '{s+=$2} END {print s+0}')
    grep '^{"label"' "$WORK/cluster-$setup.err" | "$PYTHON" -c "
import json, sys
r = json.loads(sys.stdin.read())
r.update(executor_cpu_s=round($after - $before, 2), shuffle_mb=round($shuffle / 1e6, 1), trivial_query_s=$trivial,
         jobs=$queries, query_s=round($query_ms / 1000, 2))
print(json.dumps(r))" >> "$WORK/cluster.measured"
    stop_cluster
    rm -rf "$WORK"/shuffle-*
  done
done
"$PYTHON" - "$WORK" "$REPS" <<'PY'
import json, statistics, sys
work, reps = sys.argv[1], int(sys.argv[2])
runs = [json.loads(l) for l in open(f"{work}/cluster.measured")]
print(f"SQL DAG of {work} (90 days from nothing), {reps} runs of each setup, taking turns; medians")
print(f"{'setup':11} {'seconds':>8} {'in queries s':>13} {'runner cpu s':>13} {'executor cpu s':>15} {'shuffle MB':>11} {'trivial query s':>16}  each run (s)")
for setup in ["local", "ballista-1", "ballista-2"]:
    mine = [r for r in runs if r["label"] == setup]
    med = lambda k: statistics.median(r[k] for r in mine)
    print(f"{setup:11} {med('seconds'):8.2f} {med('query_s'):13.2f} {med('user_s') + med('sys_s'):13.2f} {med('executor_cpu_s'):15.2f} "
          f"{med('shuffle_mb'):11.1f} {med('trivial_query_s'):16.2f}  {' '.join(str(r['seconds']) for r in mine)}")
PY
