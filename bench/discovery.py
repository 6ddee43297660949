"""Discovery benchmark: a Firehose prefix in S3 (moto's server on 127.0.0.1) holding N drop
objects over a year of hours, ingested once; then one new drop arrives and the next run lists
from the last ingested hour minus the lookback, next to the same run with --full-listing.

    make bench-discovery            (N=100000; DROPS=20000 for a quicker run)
Prints seconds and objects listed for each run.
"""

import concurrent.futures as cf
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import boto3

BIN, N = sys.argv[1], int(sys.argv[2])
port = socket.socket()
port.bind(("127.0.0.1", 0))
PORT = port.getsockname()[1]
port.close()
env = dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{PORT}", AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
           AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
os.environ.update(env)
moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(PORT)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", PORT)).close()
            break
        except OSError:
            time.sleep(0.1)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="bench")
    start = dt.datetime(2025, 11, 1)

    def key(i):
        t = start + dt.timedelta(minutes=5 * i)
        return f"raw/companies/{t:%Y/%m/%d/%H}/companies-1-{t:%Y-%m-%d-%H-%M-%S}-{uuid.UUID(int=i)}"

    def put(i):
        body = json.dumps({"event_type": "tenant_created", "event_id": f"e{i}", "companyID": f"c{i % 500}",
                           "name": "n", "industry": "IT", "revenu": 1.0, "employees": 5, "monthlyFee": 10.0,
                           "totalFee": 10.0, "creationDate": int((start + dt.timedelta(minutes=5 * i)).timestamp() * 1000)})
        s3.put_object(Bucket="bench", Key=key(i), Body=body.encode())

    t0 = time.time()
    with cf.ThreadPoolExecutor(16) as ex:
        list(ex.map(put, range(N)))
    print(f"uploaded {N} drops in {time.time() - t0:.1f} s", file=sys.stderr)
    work = tempfile.mkdtemp()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(work, "runner.toml"), "w") as f:
        f.write(f'warehouse = "s3://bench/warehouse"\njobs_dir = "{repo}/jobs"\nsql_dir = "{repo}/sql"\n'
                f'schemas_dir = "{repo}/schemas"\n[sources.companies]\nurl = "s3://bench/raw/companies/"\n'
                '[sources.bigdatajobs]\nurl = "s3://bench/raw/bigdatajobs/"\n[ingest]\nmax_objects_per_batch = 2000\n')

    def run(*extra):
        t = time.time()
        out = subprocess.run([BIN, "--quiet", "--config", os.path.join(work, "runner.toml"), "run", "ingest_companies",
                              "--format", "json", *extra], cwd=repo, env=env, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(out.stderr)
        s = json.loads(out.stdout)[0]
        return time.time() - t, s["listed"], s["objects"]

    for name, extra in [("first run (everything is new)", ()), ("next run, one new drop", ()),
                        ("next run, one new drop, --full-listing", ("--full-listing",))]:
        if name.startswith("next"):
            put(N + (1 if "full" in name else 0))
        secs, listed, objects = run(*extra)
        print(f"{name:42s} {secs:8.2f} s  listed {listed:7d}  ingested {objects:7d}")
finally:
    moto.terminate()
