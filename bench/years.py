"""Calendar benchmark (make bench-calendar): does a run after years of daily partitions cost what
a run in the first month costs? (The file is years.py: one called calendar.py would hide the
standard library's module of that name.)

For warehouses with DAYS (default 30,90,360,1080) days of history (`runner simulate` drops of
TENANTS tenants, ingested and built through the real write path by one `run --all`), locally
and on moto's S3 server on 127.0.0.1: the same new day of drops delivered to each, then
  new day   `run --all --at` the new day
  no-op     the same `run --all` again (nothing new: every SQL, export and scoring job is up to date)
  day query `runner query` of one day of job_events (`WHERE dt = DATE ...`)
  snapshot  `runner query` of tenants as of the new day
with wall time, peak RSS and object-store requests by kind (RUNNER_COUNT_REQUESTS=1; an S3
rename is a COPY and a DELETE, counted as two), medians of REPS new days, the sizes taking turns,
on local disk (`local`), on moto (`s3`), and on local disk with DELAY_MS added to every request
(`delayed`: S3's first-byte latency where a listing costs what its prefix holds; moto's listing
scans the whole bucket, so there seconds grow with the bucket although requests do not),
each against the first size and against 90 days (where the 90-day windows of job90 and the
activity export are full: a younger warehouse reads fewer days because it has fewer).
Then, on S3, the reference job (both ingests, tenant_activity_daily, tenant_state, tenants) on a
new day with DELAY_MS (default 25) added to every request against the same without.

Usage: python bench/years.py RUNNER_BIN   (env: DAYS, TENANTS, REPS, WHERE=local,s3,delayed, DELAY_MS)
"""
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib
from benchlib import KINDS, config, measured, s3_client, start_moto

BIN = sys.argv[1]
DAYS = [int(d) for d in os.environ.get("DAYS", "30,90,360,1080").split(",")]
TENANTS = int(os.environ.get("TENANTS", "8"))
REPS = int(os.environ.get("REPS", "3"))
WHERE = os.environ.get("WHERE", "local,s3").split(",")
DELAY_MS = int(os.environ.get("DELAY_MS", "25"))
END = datetime.date(2026, 11, 19)
STEPS = ("new day", "no-op", "day query", "snapshot")
REFERENCE = ["ingest_bigdatajobs", "ingest_companies", "tenant_activity_daily", "tenant_state", "tenants"]


def simulate(out, days, end, seed, env=None):
    subprocess.run([BIN, "--quiet", "simulate", "--out", out, "--tenants", str(TENANTS), "--days", str(days),
                    "--end-date", str(end), "--seed", str(seed), "--buffer-seconds", "900"],
                   env={**os.environ, **(env or {})}, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def deliver(where, env, new_days, day, src):
    """Copies the drops that arrived on `day` (its hour folders) into the source."""
    for stream in ("companies", "bigdatajobs"):
        folder = os.path.join(new_days, "raw", stream, f"{day:%Y/%m/%d}")
        for dirpath, _, files in os.walk(folder):
            for name in files:
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, new_days)
                if where in ("local", "delayed"):
                    dest = os.path.join(src.removeprefix("file://"), rel)
                    os.makedirs(os.path.dirname(dest), exist_ok=True)
                    shutil.copy(path, dest)
                else:
                    bucket, prefix = src.removeprefix("s3://").split("/", 1)
                    with open(path, "rb") as f:
                        s3_client(env).put_object(Bucket=bucket, Key=f"{prefix}/{rel}", Body=f.read())


def setup(where, days, tmp, env):
    root = os.path.join(tmp, f"{where}-{days}")
    os.makedirs(root)
    if where in ("local", "delayed"):
        wh, src = f"file://{root}/warehouse", f"file://{root}/drops"
    else:
        bucket = f"calendar-{days}-{int(time.time() * 1000)}"
        s3_client(env).create_bucket(Bucket=bucket)
        wh, src = f"s3://{bucket}/warehouse", f"s3://{bucket}/drops"
    t0 = time.perf_counter()
    simulate(src, days, END, 1, env)
    cfg = config(root, wh, src)
    subprocess.run([BIN, "--config", cfg, "--quiet", "run", "--all", "--at", str(END)],
                   env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL)
    print(f"  {where}: {days} days of history generated and built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return cfg, src


def total(req, where):
    # On S3 a rename is a COPY and a DELETE.
    return sum(req[k] for k in KINDS) + (req["copy"] if where == "s3" else 0)


def compare(where, env, tmp, new_days):
    cfgs = {n: setup(where, n, tmp, env) for n in DAYS}
    if where == "delayed":
        # Built without the delay; every measured step has it.
        env = {**env, "RUNNER_DELAY_REQUESTS_MS": str(DELAY_MS)}
    results = {(n, s): [] for n in DAYS for s in STEPS}
    for rep in range(REPS):
        day = END + datetime.timedelta(days=rep + 1)
        for n in DAYS:  # the sizes take turns
            cfg, src = cfgs[n]
            deliver(where, env, new_days, day, src)
            results[(n, "new day")].append(measured(BIN, cfg, env, ["run", "--all", "--at", str(day)]))
            results[(n, "no-op")].append(measured(BIN, cfg, env, ["run", "--all", "--at", str(day)]))
            results[(n, "day query")].append(
                measured(BIN, cfg, env, ["query", f"SELECT count(*) FROM job_events WHERE dt = DATE '{day}'"]))
            results[(n, "snapshot")].append(
                measured(BIN, cfg, env, ["query", f"SELECT count(*) FROM tenants WHERE as_of = DATE '{day}'"]))
    label = f"local disk, {DELAY_MS} ms added to every request" if where == "delayed" else where
    print(f"\n{label}: medians of {REPS} new days, {TENANTS} tenants (runner {BIN})")
    print(f"{'days':>5} {'step':10} {'seconds':>8} {'RSS MiB':>8} {'GET':>6} {'HEAD':>5} {'LIST pages':>11} {'PUT':>5} "
          f"{'DELETE':>7} {'COPY':>5} {'requests':>9} {'time, requests vs ' + str(DAYS[0]) + ' d':>24} {'vs 90 d':>16}")
    for step in STEPS:
        rows = {}
        for n in DAYS:
            runs = results[(n, step)]
            rows[n] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
                       {k: statistics.median(r[2][k] for r in runs) for k in KINDS},
                       statistics.median(total(r[2], where) for r in runs))
        for n, (sec, rss, req, tot) in rows.items():
            def vs(m):
                if m not in rows:
                    return "-"
                return f"x{sec / rows[m][0]:.2f} / x{tot / max(rows[m][3], 1):.2f}"
            print(f"{n:>5} {step:10} {sec:8.2f} {rss:8.1f} {req['get']:6.0f} {req['head']:5.0f} {req['list_pages']:11.0f} "
                  f"{req['put']:5.0f} {req['delete']:7.0f} {req['copy']:5.0f} {tot:9.0f} {vs(DAYS[0]):>24} {vs(90):>16}")
    return cfgs


def delayed(env, cfgs, new_days):
    """The reference job on a new day of the largest warehouse, with and without the delay."""
    n = DAYS[-1]
    cfg, src = cfgs[n]
    times = {0: [], DELAY_MS: []}
    for rep in range(REPS):
        for delay in (0, DELAY_MS):
            day = END + datetime.timedelta(days=REPS + 1 + 2 * rep + (1 if delay else 0))
            deliver("s3", env, new_days, day, src)
            sec, _, _ = measured(BIN, cfg, {**env, "RUNNER_DELAY_REQUESTS_MS": str(delay)},
                                 ["run", *REFERENCE, "--at", str(day)])
            times[delay].append(sec)
    a, b = statistics.median(times[0]), statistics.median(times[DELAY_MS])
    print(f"\ns3, {n} days: the reference job ({', '.join(REFERENCE)}) on a new day, medians of {REPS}:")
    print(f"  no added latency {a:.2f} s; {DELAY_MS} ms added to every request {b:.2f} s: x{b / a:.2f}")


def main():
    with tempfile.TemporaryDirectory(prefix="runner-bench-calendar-") as tmp:
        new_days = os.path.join(tmp, "new-days")
        # The new days' drops, one seed for every warehouse: the same work delivered to each.
        simulate(new_days, 3 * REPS + 2, END + datetime.timedelta(days=3 * REPS + 2), 7)
        if "local" in WHERE:
            compare("local", {}, tmp, new_days)
        if "delayed" in WHERE:
            compare("delayed", {}, tmp, new_days)
        if "s3" in WHERE:
            proc, env = start_moto()
            try:
                cfgs = compare("s3", env, tmp, new_days)
                if DELAY_MS > 0:
                    delayed(env, cfgs, new_days)
            finally:
                proc.kill()


main()
