"""DuckDB doing runner's ingest on the same drops: read the JSON (any framing, plain or GZIP),
type and validate it, drop Firehose duplicates by event_id (by content when absent), and write
Hive-partitioned Parquet sorted by companyID. Prints the rows written per table.

Usage: python duckdb_ingest.py DROPS_DIR OUT_DIR [--format F] [--as-of DATE]

--format: DuckDB's JSON reader. `newline_delimited` (the default) is its fastest and is correct
  for drops with one record per line (`runner simulate --framing ndjson`); `unstructured` also
  reads concatenated objects and pretty-printed JSON, and is much slower.
--as-of: the reference job; after the ingest, build tenant_activity_daily and tenants as of DATE
  from the Parquet just written (duckdb_dag.py's SQL).
"""
import argparse
import os

import duckdb

import duckdb_dag

ap = argparse.ArgumentParser()
ap.add_argument("drops")
ap.add_argument("out")
ap.add_argument("--format", default="newline_delimited", choices=["newline_delimited", "unstructured"])
ap.add_argument("--as-of")
args = ap.parse_args()
drops, out = args.drops, args.out
os.makedirs(out, exist_ok=True)
con = duckdb.connect()

streams = {
    "job_events": (
        "bigdatajobs",
        {"event_type": "VARCHAR", "event_id": "VARCHAR", "companyID": "VARCHAR", "tenantID": "VARCHAR",
         "creationDate": "BIGINT", "received_at": "BIGINT", "userID": "VARCHAR", "jobID": "VARCHAR",
         "nbJobs": "BIGINT", "dataSize": "BIGINT", "status": "VARCHAR", "durationSec": "BIGINT"},
        "('job_submitted','job_terminated','job_cancelled')",
        "userID, jobID, coalesce(nbJobs, 1) AS nbJobs, dataSize, status, durationSec",
    ),
    "tenant_events": (
        "companies",
        {"event_type": "VARCHAR", "event_id": "VARCHAR", "companyID": "VARCHAR", "tenantID": "VARCHAR",
         "creationDate": "BIGINT", "received_at": "BIGINT", "name": "VARCHAR", "industry": "VARCHAR",
         "revenu": "BIGINT", "employees": "BIGINT", "monthlyFee": "DOUBLE", "totalFee": "DOUBLE",
         "sentiment": "DOUBLE", "userID": "VARCHAR", "sessionID": "VARCHAR", "job30": "BIGINT", "job90": "BIGINT"},
        "('tenant_created','tenant_updated','user_added','user_deleted','user_login','user_logoff','user_session_timeoff')",
        "name, industry, revenu, employees, monthlyFee, totalFee, sentiment, userID, sessionID, job30, job90",
    ),
}

for table, (stream, cols, types, extra) in streams.items():
    columns = "{" + ", ".join(f"'{k}': '{v}'" for k, v in cols.items()) + "}"
    con.execute(f"""
        COPY (
          WITH raw AS (
            SELECT * FROM read_json('{drops}/raw/{stream}/*/*/*/*/*', format='{args.format}', columns={columns},
                                    ignore_errors=true, filename=true)
          ), typed AS (
            SELECT coalesce(event_type, CASE WHEN '{stream}' = 'bigdatajobs' THEN 'job_submitted' ELSE 'tenant_updated' END) AS event_type,
                   event_id, coalesce(companyID, tenantID) AS companyID,
                   make_timestamp(creationDate * 1000) AS creationDate,
                   make_timestamp(received_at * 1000) AS received_at,
                   make_timestamp(coalesce(creationDate, received_at) * 1000) AS event_time,
                   {extra}, event_type IS NULL AS legacy, filename AS source_object,
                   strftime(make_timestamp(coalesce(creationDate, received_at) * 1000), '%Y-%m-%d') AS dt,
                   coalesce(event_id, md5(concat_ws('|', {", ".join(cols)}))) AS k
            FROM raw
            WHERE coalesce(companyID, tenantID) IS NOT NULL
              AND (event_type IS NULL OR event_type IN {types})
              AND (creationDate IS NULL OR creationDate BETWEEN 946684800000 AND 4102444800000)
          )
          SELECT * EXCLUDE (k) FROM typed
          QUALIFY row_number() OVER (PARTITION BY k ORDER BY source_object) = 1
          ORDER BY dt, companyID
        ) TO '{out}/{table}' (FORMAT parquet, COMPRESSION snappy, PARTITION_BY (dt), OVERWRITE_OR_IGNORE)
    """)
    n = con.execute(f"SELECT count(*) FROM read_parquet('{out}/{table}/*/*.parquet')").fetchone()[0]
    print(f"{table}: {n} rows")

if args.as_of:
    for table in streams:
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{out}/{table}/*/*.parquet', hive_partitioning=true)")
    duckdb_dag.build(con, f"{out}/dag", args.as_of, jobs=("tenant_activity_daily", "tenants"))
