"""DuckDB running runner's SQL DAG (sql/*.sql, translated to DuckDB's dialect) over the same
Parquet that runner ingested, as of one date, writing the same partitioned outputs.

Usage: python duckdb_dag.py WAREHOUSE OUT_DIR AS_OF
The incremental daily jobs become one GROUP BY over all days (DuckDB's best case).
`build` is also the second half of the ingest benchmark's reference job (duckdb_ingest.py).
"""
import os
import sys

import duckdb

JOBS = ("tenant_activity_daily", "jobs_daily", "tenants", "churn_features")


def build(con, out, as_of, jobs=JOBS):
    """Runs the DAG's jobs over the views `job_events` and `tenant_events`; prints row counts."""
    A = f"DATE '{as_of}'"
    os.makedirs(out, exist_ok=True)

    con.execute(f"""
    CREATE TABLE tenant_activity_daily AS
    WITH jobs AS (
        SELECT dt, companyID,
               SUM(CASE WHEN event_type = 'job_submitted' THEN nbJobs ELSE 0 END) AS jobs_submitted,
               COUNT(*) FILTER (WHERE event_type = 'job_terminated' AND status = 'succeeded') AS jobs_succeeded,
               COUNT(*) FILTER (WHERE event_type = 'job_terminated' AND status = 'failed') AS jobs_failed,
               COUNT(*) FILTER (WHERE event_type = 'job_cancelled') AS jobs_cancelled,
               SUM(CASE WHEN event_type = 'job_submitted' THEN dataSize ELSE 0 END) AS data_size_mb,
               MAX(event_time) AS last_event_at
        FROM job_events WHERE dt <= {A} GROUP BY dt, companyID
    ), tenant AS (
        SELECT dt, companyID,
               COUNT(*) FILTER (WHERE event_type = 'user_login') AS logins,
               COUNT(DISTINCT [userID, sessionID]) FILTER (WHERE event_type = 'user_login' AND sessionID IS NOT NULL) AS sessions,
               COUNT(*) FILTER (WHERE event_type = 'user_added') AS users_added,
               COUNT(*) FILTER (WHERE event_type = 'user_deleted') AS users_deleted,
               MAX(event_time) AS last_event_at
        FROM tenant_events WHERE dt <= {A} GROUP BY dt, companyID
    ), active AS (
        SELECT dt, companyID, COUNT(DISTINCT userID) AS active_users FROM (
            SELECT dt, companyID, userID FROM job_events WHERE dt <= {A} AND userID IS NOT NULL
            UNION ALL
            SELECT dt, companyID, userID FROM tenant_events
            WHERE dt <= {A} AND event_type IN ('user_login', 'user_logoff', 'user_session_timeoff')
        ) GROUP BY dt, companyID
    ), keys AS (SELECT dt, companyID FROM jobs UNION SELECT dt, companyID FROM tenant)
    SELECT k.dt, k.companyID,
           COALESCE(j.jobs_submitted, 0) AS jobs_submitted, COALESCE(j.jobs_succeeded, 0) AS jobs_succeeded,
           COALESCE(j.jobs_failed, 0) AS jobs_failed, COALESCE(j.jobs_cancelled, 0) AS jobs_cancelled,
           COALESCE(j.data_size_mb, 0) AS data_size_mb, COALESCE(t.logins, 0) AS logins,
           COALESCE(t.sessions, 0) AS sessions, COALESCE(a.active_users, 0) AS active_users,
           COALESCE(t.users_added, 0) AS users_added, COALESCE(t.users_deleted, 0) AS users_deleted,
           GREATEST(j.last_event_at, t.last_event_at) AS last_event_at
    FROM keys k
    LEFT JOIN jobs j USING (dt, companyID) LEFT JOIN tenant t USING (dt, companyID) LEFT JOIN active a USING (dt, companyID)
    """)
    con.execute(f"COPY tenant_activity_daily TO '{out}/tenant_activity_daily' (FORMAT parquet, PARTITION_BY (dt), OVERWRITE_OR_IGNORE)")
    if "jobs_daily" in jobs:
        con.execute(f"""
        COPY (SELECT dt, companyID AS company_id, userID AS userid, dt AS date, SUM(dataSize) AS dataSize, SUM(nbJobs) AS jobSubmitted
              FROM job_events WHERE dt <= {A} AND event_type = 'job_submitted' GROUP BY dt, companyID, userID)
        TO '{out}/jobs_daily' (FORMAT parquet, PARTITION_BY (dt), OVERWRITE_OR_IGNORE)
        """)
    con.execute(f"""
    CREATE TABLE tenants AS
    WITH profile AS (
        SELECT companyID,
               arg_max(name, event_time) FILTER (WHERE name IS NOT NULL) AS name,
               arg_max(industry, event_time) FILTER (WHERE industry IS NOT NULL) AS industry,
               arg_max(revenu, event_time) FILTER (WHERE revenu IS NOT NULL) AS revenu,
               arg_max(employees, event_time) FILTER (WHERE employees IS NOT NULL) AS employees,
               arg_max(monthlyFee, event_time) FILTER (WHERE monthlyFee IS NOT NULL) AS monthlyFee,
               arg_max(totalFee, event_time) FILTER (WHERE totalFee IS NOT NULL) AS totalFee
        FROM tenant_events WHERE dt <= {A} AND event_type IN ('tenant_created', 'tenant_updated') GROUP BY companyID
    ), activity AS (
        SELECT companyID, SUM(users_added) - SUM(users_deleted) AS users, MAX(last_event_at) AS last_activity_at,
               SUM(jobs_submitted) FILTER (WHERE dt >= {A} - INTERVAL 29 DAY) AS job30,
               SUM(jobs_submitted) FILTER (WHERE dt >= {A} - INTERVAL 89 DAY) AS job90
        FROM tenant_activity_daily WHERE dt <= {A} GROUP BY companyID
    ), all_tenants AS (SELECT companyID FROM profile UNION SELECT companyID FROM activity),
    joined AS (
        SELECT t.companyID, p.name, p.industry, p.revenu, p.employees, p.monthlyFee, p.totalFee,
               COALESCE(a.users, 0) AS users, a.last_activity_at, COALESCE(a.job30, 0) AS job30, COALESCE(a.job90, 0) AS job90
        FROM all_tenants t LEFT JOIN profile p USING (companyID) LEFT JOIN activity a USING (companyID)
    )
    SELECT {A} AS as_of, *, RANK() OVER (ORDER BY job30, job90) AS activity_rank, (job30 < 5 OR job90 < 20) AS minimal_activity
    FROM joined
    """)
    con.execute(f"COPY tenants TO '{out}/tenants' (FORMAT parquet, PARTITION_BY (as_of), OVERWRITE_OR_IGNORE)")
    if "churn_features" in jobs:
        con.execute(f"""
        COPY (SELECT as_of, companyID, industry, revenu, employees, job30, job90, monthlyFee, totalFee, NULL::BOOLEAN AS riskOfChurn
              FROM tenants) TO '{out}/churn_features' (FORMAT parquet, PARTITION_BY (as_of), OVERWRITE_OR_IGNORE)
        """)
    for t in ["tenant_activity_daily", "tenants"]:
        print(f"{t}: {con.execute(f'SELECT count(*) FROM {t}').fetchone()[0]} rows")


if __name__ == "__main__":
    wh, out, as_of = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(out, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"CREATE VIEW job_events AS SELECT * FROM read_parquet('{wh}/job_events/*/*/*.parquet', hive_partitioning=true)")
    con.execute(f"CREATE VIEW tenant_events AS SELECT * FROM read_parquet('{wh}/tenant_events/*/*/*.parquet', hive_partitioning=true)")
    build(con, out, as_of)
