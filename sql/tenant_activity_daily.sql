-- tenant_activity_daily: one row per tenant and event day, what the tenant did that day.
--
-- Incremental: the runner rebuilds the days whose job_events or tenant_events partitions
-- changed since the job's last successful run (late events included), passing each run of
-- consecutive changed days as $dt_from..$dt_to (DATEs, inclusive), and replaces those days'
-- partitions. Every filter is on dt, so only those days' files are read.
--
-- A tenant has a row on a day it had a job or a tenant/user event. Each table is aggregated
-- once per (dt, companyID) and the two are FULL JOINed (a UNION of their keys made DataFusion
-- aggregate each table twice); distinct sessions and active users are counted apart (a
-- COUNT(DISTINCT) next to other aggregates keeps a hash set per group, many times slower).
WITH jobs AS (
    SELECT dt, companyID,
           SUM(CASE WHEN event_type = 'job_submitted' THEN nbJobs ELSE 0 END)                 AS jobs_submitted,
           COUNT(*) FILTER (WHERE event_type = 'job_terminated' AND status = 'succeeded')     AS jobs_succeeded,
           COUNT(*) FILTER (WHERE event_type = 'job_terminated' AND status = 'failed')        AS jobs_failed,
           COUNT(*) FILTER (WHERE event_type = 'job_cancelled')                               AS jobs_cancelled,
           SUM(CASE WHEN event_type = 'job_submitted' THEN dataSize ELSE 0 END)               AS data_size_mb,
           MAX(event_time)                                                                    AS last_event_at
    FROM job_events
    WHERE dt BETWEEN $dt_from AND $dt_to
    GROUP BY dt, companyID
),
tenant AS (
    SELECT dt, companyID,
           COUNT(*) FILTER (WHERE event_type = 'user_login')                                  AS logins,
           COUNT(*) FILTER (WHERE event_type = 'user_added')                                  AS users_added,
           COUNT(*) FILTER (WHERE event_type = 'user_deleted')                                AS users_deleted,
           MAX(event_time)                                                                    AS last_event_at
    FROM tenant_events
    WHERE dt BETWEEN $dt_from AND $dt_to
    GROUP BY dt, companyID
),
sessions AS (
    SELECT dt, companyID, COUNT(*) AS sessions
    FROM (
        SELECT DISTINCT dt, companyID, sessionID FROM tenant_events
        WHERE dt BETWEEN $dt_from AND $dt_to AND event_type = 'user_login' AND sessionID IS NOT NULL
    ) s
    GROUP BY dt, companyID
),
-- A user is active on a day they logged in or out, or submitted, finished or cancelled a job.
active AS (
    SELECT dt, companyID, COUNT(DISTINCT userID) AS active_users
    FROM (
        SELECT dt, companyID, userID FROM job_events
        WHERE dt BETWEEN $dt_from AND $dt_to AND userID IS NOT NULL
        UNION ALL
        SELECT dt, companyID, userID FROM tenant_events
        WHERE dt BETWEEN $dt_from AND $dt_to AND event_type IN ('user_login', 'user_logoff', 'user_session_timeoff')
    ) u
    GROUP BY dt, companyID
),
days AS (
    SELECT COALESCE(j.dt, t.dt) AS dt, COALESCE(j.companyID, t.companyID) AS companyID,
           j.jobs_submitted, j.jobs_succeeded, j.jobs_failed, j.jobs_cancelled, j.data_size_mb,
           t.logins, t.users_added, t.users_deleted,
           GREATEST(j.last_event_at, t.last_event_at) AS last_event_at
    FROM jobs j
    FULL JOIN tenant t ON t.dt = j.dt AND t.companyID = j.companyID
)
SELECT d.dt,
       d.companyID,
       COALESCE(d.jobs_submitted, 0)               AS jobs_submitted,
       COALESCE(d.jobs_succeeded, 0)               AS jobs_succeeded,
       COALESCE(d.jobs_failed, 0)                  AS jobs_failed,
       COALESCE(d.jobs_cancelled, 0)               AS jobs_cancelled,
       COALESCE(d.data_size_mb, 0)                 AS data_size_mb,
       COALESCE(d.logins, 0)                       AS logins,
       COALESCE(s.sessions, 0)                     AS sessions,
       COALESCE(a.active_users, 0)                 AS active_users,
       COALESCE(d.users_added, 0)                  AS users_added,
       COALESCE(d.users_deleted, 0)                AS users_deleted,
       d.last_event_at
FROM days d
LEFT JOIN sessions s ON s.dt = d.dt AND s.companyID = d.companyID
LEFT JOIN active a ON a.dt = d.dt AND a.companyID = d.companyID
