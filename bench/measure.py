"""Runs a command and prints its wall time, peak RSS and CPU time (user, system) as JSON on stderr.

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
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"label": label, "seconds": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
                  "user_s": round(usage.ru_utime, 2), "sys_s": round(usage.ru_stime, 2), "rc": rc}), file=sys.stderr)
sys.exit(rc)
