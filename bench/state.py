"""State benchmark (make bench-state): does a year of runs cost what the first day costs?

For a warehouse whose streams each have COMMITS committed batches (written by the generator
examples/state_warehouse.rs with the runner's own ledger code) next to one with 100, locally and
on moto's S3 server on 127.0.0.1: a no-op ingest of both streams, and a run that ingests one new
drop; wall time, peak RSS and object-store requests by kind (RUNNER_COUNT_REQUESTS=1), medians of
REPS runs, the two sizes taking turns. Then RUNS consecutive `run --all` on the sample data and
the state they leave (lease objects per job, runner_runs files, staging entries, ledger records).

Usage: python bench/state.py RUNNER_BIN GENERATOR_BIN   (env: COMMITS, REPS, RUNS, WHERE=local,s3)
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib
from benchlib import config, s3_client, start_moto

BIN, GEN = sys.argv[1], sys.argv[2]
REPO = benchlib.REPO
COMMITS = int(os.environ.get("COMMITS", "100000"))
REPS = int(os.environ.get("REPS", "3"))
RUNS = int(os.environ.get("RUNS", "1000"))
WHERE = os.environ.get("WHERE", "local,s3").split(",")
NEW_DROP = '{"event_type":"job_submitted","event_id":"new-%d","companyID":"c1","userID":"u1","nbJobs":1,"creationDate":1795179600000}\n'


def measured(cfg, env, args):
    return benchlib.measured(BIN, cfg, env, args)


def put_drop(where, env, sources, n):
    """One new drop of bigdatajobs, an hour after the generator's last one."""
    key = f"raw/bigdatajobs/2026/11/20/13/bigdatajobs-1-2026-11-20-13-00-{n:02d}-11111111-0000-4000-8000-{n:012d}"
    body = (NEW_DROP % n).encode()
    if where == "local":
        path = os.path.join(sources.removeprefix("file://"), key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(body)
    else:
        s3 = s3_client(env)
        bucket, prefix = sources.removeprefix("s3://").split("/", 1)
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=body)


def setup(where, size, tmp, env):
    root = os.path.join(tmp, f"{where}-{size}")
    os.makedirs(root)
    if where == "local":
        wh, src = f"file://{root}/warehouse", f"file://{root}/drops"
    else:
        bucket = f"state-{size}-{int(time.time() * 1000)}"
        s3_client(env).create_bucket(Bucket=bucket)
        wh, src = f"s3://{bucket}/warehouse", f"s3://{bucket}/drops"
    t0 = time.perf_counter()
    subprocess.run([GEN, wh, src, str(size)], env={**os.environ, **env}, check=True, stderr=subprocess.DEVNULL)
    print(f"  generated {where} warehouse with {size:,} batches per stream in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    cfg = config(root, wh, src)
    # A first run settles what every later run finds (catalog tables, the format marker).
    subprocess.run([BIN, "--config", cfg, "--quiet", "run", "ingest_bigdatajobs", "ingest_companies"],
                   env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL)
    return cfg, src


def compare(where, env, tmp):
    sizes = [100, COMMITS]
    cfgs = {n: setup(where, n, tmp, env) for n in sizes}
    results = {(n, kind): [] for n in sizes for kind in ("no-op", "one new drop")}
    drop = 0
    for _ in range(REPS):
        for n in sizes:  # the sizes take turns
            cfg, src = cfgs[n]
            results[(n, "no-op")].append(measured(cfg, env, ["run", "ingest_bigdatajobs", "ingest_companies"]))
            drop += 1
            put_drop(where, env, src, drop)
            results[(n, "one new drop")].append(measured(cfg, env, ["run", "ingest_bigdatajobs", "ingest_companies"]))
    print(f"\n{where}: medians of {REPS} ({'runner ' + BIN})")
    print(f"{'batches':>9} {'run':14} {'seconds':>8} {'RSS MiB':>8} {'GET':>5} {'HEAD':>5} {'LIST pages':>11} {'PUT':>5} {'DELETE':>7} {'COPY':>5} {'requests':>9}")
    table = {}
    for kind in ("no-op", "one new drop"):
        for n in sizes:
            runs = results[(n, kind)]
            sec = statistics.median(r[0] for r in runs)
            rss = statistics.median(r[1] for r in runs)
            req = {k: statistics.median(r[2][k] for r in runs) for k in runs[0][2]}
            total = req["get"] + req["head"] + req["list_pages"] + req["put"] + req["delete"] + req["copy"]
            table[(n, kind)] = (sec, total)
            print(f"{n:>9,} {kind:14} {sec:8.2f} {rss:8.1f} {req['get']:5.0f} {req['head']:5.0f} {req['list_pages']:11.0f} "
                  f"{req['put']:5.0f} {req['delete']:7.0f} {req['copy']:5.0f} {total:9.0f}")
        small, big = table[(100, kind)], table[(COMMITS, kind)]
        print(f"{'':>9} {kind:14} {COMMITS:,} / 100: time x{big[0] / small[0]:.2f}, requests x{big[1] / small[1]:.2f}")


def many_runs(tmp):
    """RUNS runs in minutes instead of days: the retentions (checkpoint clean-up 1h, replaced
    versions 1h) are set to 0, so the clean-ups that 5-minute runs would do happen here too."""
    root = os.path.join(tmp, "many")
    os.makedirs(os.path.join(root, "jobs"))
    for name in os.listdir(os.path.join(REPO, "jobs")):
        text = open(os.path.join(REPO, "jobs", name)).read().replace('keep_replaced = "1h"', 'keep_replaced = "0s"')
        open(os.path.join(root, "jobs", name), "w").write(text)
    cfg = config(root, f"file://{root}/warehouse", f"file://{REPO}/data/drops", os.path.join(root, "jobs"),
                 '[ingest]\ncheckpoint_retention = "0s"\n')
    t0 = time.perf_counter()
    for i in range(RUNS):
        at = f"2026-11-{20 + i // 1440:02d}T{i // 60 % 24:02d}:{i % 60:02d}:00Z"
        subprocess.run([BIN, "--config", cfg, "--quiet", "run", "--all", "--at", at], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    wh = os.path.join(root, "warehouse")

    def count(rel):
        n = 0
        for _, _, files in os.walk(os.path.join(wh, rel)):
            n += len(files)
        return n

    leases = {d: count(f"_runner/leases/{d}") for d in sorted(os.listdir(os.path.join(wh, "_runner/leases")))}
    staging_dirs = sum(len(d) for _, d, _ in os.walk(os.path.join(wh, "_runner/staging")))
    print(f"\nstate after {RUNS} consecutive `run --all` on data/drops ({wall:.0f} s, retentions 0):")
    print(f"  lease objects per job: max {max(leases.values())} ({sum(leases.values())} for {len(leases)} jobs)")
    print(f"  runner_runs data files: {count('runner_runs')} (runs recorded: {RUNS * len(leases)})")
    print(f"  runner_runs ledger records: {count('_runner/ledger/runner_runs')}, checkpoints: {count('_runner/checkpoints/runner_runs')}")
    print(f"  staging: {count('_runner/staging')} files, {staging_dirs} folders")
    print(f"  schedule done markers: {count('_runner/schedule')}; recent-run objects: {count('_runner/runs')}")
    print(f"  all of _runner/: {count('_runner')} objects")


def main():
    with tempfile.TemporaryDirectory(prefix="runner-bench-state-") as tmp:
        if "local" in WHERE:
            compare("local", {}, tmp)
        if "s3" in WHERE:
            proc, env = start_moto()
            try:
                compare("s3", env, tmp)
            finally:
                proc.kill()
        if RUNS > 0:
            many_runs(tmp)


main()
