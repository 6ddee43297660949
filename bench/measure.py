"""Runs a command and prints its wall time and peak RSS (of the process tree) as JSON on stderr.

Usage: python measure.py LABEL -- cmd args...   (the command's stdout passes through)
"""
import json
import resource
import subprocess
import sys
import time

label = sys.argv[1]
cmd = sys.argv[sys.argv.index("--") + 1 :]
t0 = time.perf_counter()
rc = subprocess.call(cmd)
wall = time.perf_counter() - t0
rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"label": label, "seconds": round(wall, 2), "peak_rss_mib": round(rss_kib / 1024, 1), "rc": rc}), file=sys.stderr)
sys.exit(rc)
