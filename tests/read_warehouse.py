"""Reads a runner warehouse the way Athena-style readers do, with no help from runner.

pyarrow.dataset with Hive partitioning, and DuckDB's read_parquet(hive_partitioning=true), list
the partition folders themselves. Prints JSON: per table, the row count and rows per dt, and
jobs (sum of nbJobs) per tenant from both readers. Used by tests/independent_reader.rs.
"""
import json
import sys

import duckdb
import pyarrow.compute as pc
import pyarrow.dataset as ds

wh = sys.argv[1]
out = {}
for table in ["job_events", "tenant_events", "quarantine"]:
    part = ds.partitioning(flavor="hive")
    t = ds.dataset(f"{wh}/{table}", format="parquet", partitioning=part).to_table()
    per_dt = {}
    for dt in t.column("dt").to_pylist():
        per_dt[str(dt)] = per_dt.get(str(dt), 0) + 1
    out[table] = {"rows": t.num_rows, "per_dt": per_dt}

jobs = ds.dataset(f"{wh}/job_events", format="parquet", partitioning="hive").to_table()
g = jobs.group_by("companyID").aggregate([("nbJobs", "sum")])
out["pyarrow_jobs"] = {c: int(n) for c, n in zip(g.column("companyID").to_pylist(), g.column("nbJobs_sum").to_pylist())}
rows = duckdb.sql(
    f"SELECT companyID, sum(nbJobs) FROM read_parquet('{wh}/job_events/*/*/*.parquet', hive_partitioning=true) GROUP BY 1"
).fetchall()
out["duckdb_jobs"] = {c: int(n) for c, n in rows}
print(json.dumps(out))
