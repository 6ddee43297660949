-- tenant_activity_daily: one row per tenant and event day, what the tenant did that day.
--
-- Incremental: the runner rebuilds the days whose job_events or tenant_events partitions
-- changed since the job's last successful run (late events included), passing each run of
-- consecutive changed days as $dt_from..$dt_to (DATEs, inclusive), and replaces those days'
-- partitions. Every filter is on dt, so only those days' files are read.
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
-- Distinct login sessions, counted apart: a COUNT(DISTINCT) next to other aggregates keeps a
-- hash set per group, many times slower than a DISTINCT then a COUNT.
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
tenants_of_the_day AS (
    SELECT dt, companyID FROM jobs
    UNION
    SELECT dt, companyID FROM tenant
)
SELECT d.dt,
       d.companyID,
       COALESCE(j.jobs_submitted, 0)               AS jobs_submitted,
       COALESCE(j.jobs_succeeded, 0)               AS jobs_succeeded,
       COALESCE(j.jobs_failed, 0)                  AS jobs_failed,
       COALESCE(j.jobs_cancelled, 0)               AS jobs_cancelled,
       COALESCE(j.data_size_mb, 0)                 AS data_size_mb,
       COALESCE(t.logins, 0)                       AS logins,
       COALESCE(s.sessions, 0)                     AS sessions,
       COALESCE(a.active_users, 0)                 AS active_users,
       COALESCE(t.users_added, 0)                  AS users_added,
       COALESCE(t.users_deleted, 0)                AS users_deleted,
       GREATEST(j.last_event_at, t.last_event_at)  AS last_event_at
FROM tenants_of_the_day d
LEFT JOIN jobs j   ON j.dt = d.dt AND j.companyID = d.companyID
LEFT JOIN tenant t ON t.dt = d.dt AND t.companyID = d.companyID
LEFT JOIN sessions s ON s.dt = d.dt AND s.companyID = d.companyID
LEFT JOIN active a ON a.dt = d.dt AND a.companyID = d.companyID
