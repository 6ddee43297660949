-- tenant_activity_daily: one row per tenant and event day, what the tenant did that day.
--
-- Incremental: the runner runs this once for each day $dt (a DATE) whose job_events or
-- tenant_events partitions changed since the job's last successful run (late events included)
-- and replaces that day's partition. Every filter is on dt, so only that day's files are read.
WITH jobs AS (
    SELECT companyID,
           SUM(CASE WHEN event_type = 'job_submitted' THEN nbJobs ELSE 0 END)                 AS jobs_submitted,
           COUNT(*) FILTER (WHERE event_type = 'job_terminated' AND status = 'succeeded')     AS jobs_succeeded,
           COUNT(*) FILTER (WHERE event_type = 'job_terminated' AND status = 'failed')        AS jobs_failed,
           COUNT(*) FILTER (WHERE event_type = 'job_cancelled')                               AS jobs_cancelled,
           SUM(CASE WHEN event_type = 'job_submitted' THEN dataSize ELSE 0 END)               AS data_size_mb,
           MAX(event_time)                                                                    AS last_event_at
    FROM job_events
    WHERE dt = $dt
    GROUP BY companyID
),
tenant AS (
    SELECT companyID,
           COUNT(*) FILTER (WHERE event_type = 'user_login')                                  AS logins,
           COUNT(DISTINCT sessionID) FILTER (WHERE event_type = 'user_login')                 AS sessions,
           COUNT(*) FILTER (WHERE event_type = 'user_added')                                  AS users_added,
           COUNT(*) FILTER (WHERE event_type = 'user_deleted')                                AS users_deleted,
           MAX(event_time)                                                                    AS last_event_at
    FROM tenant_events
    WHERE dt = $dt
    GROUP BY companyID
),
-- A user is active on a day they logged in or out, or submitted, finished or cancelled a job.
active AS (
    SELECT companyID, COUNT(DISTINCT userID) AS active_users
    FROM (
        SELECT companyID, userID FROM job_events WHERE dt = $dt AND userID IS NOT NULL
        UNION ALL
        SELECT companyID, userID FROM tenant_events
        WHERE dt = $dt AND event_type IN ('user_login', 'user_logoff', 'user_session_timeoff')
    ) u
    GROUP BY companyID
),
tenants_of_the_day AS (
    SELECT companyID FROM jobs
    UNION
    SELECT companyID FROM tenant
)
SELECT CAST($dt AS DATE)                           AS dt,
       d.companyID,
       COALESCE(j.jobs_submitted, 0)               AS jobs_submitted,
       COALESCE(j.jobs_succeeded, 0)               AS jobs_succeeded,
       COALESCE(j.jobs_failed, 0)                  AS jobs_failed,
       COALESCE(j.jobs_cancelled, 0)               AS jobs_cancelled,
       COALESCE(j.data_size_mb, 0)                 AS data_size_mb,
       COALESCE(t.logins, 0)                       AS logins,
       COALESCE(t.sessions, 0)                     AS sessions,
       COALESCE(a.active_users, 0)                 AS active_users,
       COALESCE(t.users_added, 0)                  AS users_added,
       COALESCE(t.users_deleted, 0)                AS users_deleted,
       GREATEST(j.last_event_at, t.last_event_at)  AS last_event_at
FROM tenants_of_the_day d
LEFT JOIN jobs j   ON j.companyID = d.companyID
LEFT JOIN tenant t ON t.companyID = d.companyID
LEFT JOIN active a ON a.companyID = d.companyID
