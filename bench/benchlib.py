"""Helpers the Python benchmarks share: a runner.toml for a warehouse and sources, one measured
run (wall time, peak RSS, requests by kind), and moto's S3 server on 127.0.0.1."""
import json
import os
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEASURE = os.path.join(REPO, "bench", "measure.py")
KINDS = ("get", "head", "list_pages", "put", "delete", "copy")


def config(root, warehouse, sources, jobs=os.path.join(REPO, "jobs"), extra=""):
    path = os.path.join(root, "runner.toml")
    with open(path, "w") as f:
        f.write(
            f'warehouse = "{warehouse}"\njobs_dir = "{jobs}"\nsql_dir = "{REPO}/sql"\nschemas_dir = "{REPO}/schemas"\n'
            f'[sources.companies]\nurl = "{sources}/raw/companies/"\n[sources.bigdatajobs]\nurl = "{sources}/raw/bigdatajobs/"\n'
            f'[scoring]\nmodel = "{REPO}/data/model/churn.json"\n{extra}'
        )
    return path


def measured(binary, cfg, env, args):
    """One run: (seconds, peak RSS MiB, requests by kind)."""
    p = subprocess.run(
        [sys.executable, MEASURE, "run", "--", binary, "--config", cfg, "--quiet", *args],
        env={**os.environ, **env, "RUNNER_COUNT_REQUESTS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    m = req = None
    for line in p.stderr.splitlines():
        if line.startswith('{"label"'):
            m = json.loads(line)
        elif line.startswith('{"requests"'):
            req = json.loads(line)["requests"]
    if p.returncode != 0 or m is None or req is None:
        sys.exit(f"runner {args} failed:\n{p.stderr}")
    return m["seconds"], m["peak_rss_mib"], req


def s3_client(env):
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def start_moto():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true", "AWS_ALLOW_HTTP": "true"}
    return proc, env
