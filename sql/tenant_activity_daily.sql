-- tenant_activity_daily: one row per tenant and event day, what the tenant did that day.
--
-- Incremental: the runner rebuilds the days whose job_events or tenant_events partitions
-- changed since the job's last successful run (late events included), passing each run of
-- consecutive changed days as $dt_from..$dt_to (DATEs, inclusive), and replaces those days'
-- partitions. Every filter is on dt, so only those days' files are read.
--
-- A tenant has a row on a day it had a job or a tenant/user event. A user is active on a day
-- they submitted, finished or cancelled a job, or logged in or out. A session is one of a user's
-- sessionIDs with a login that day.
--
-- Each event table is read once (DataFusion does not share a scan between CTEs): events are
-- first summed per tenant, day and user (tenant events also per session), the two sides are
-- joined per user, and the users are then summed per tenant and day. Distinct users and
-- sessions fall out of the grouping, with no COUNT(DISTINCT) (which keeps a hash set per group,
-- 15 times slower here); sums are FILTERed rather than summing a CASE (15% less CPU).

-- Job events per user (userID NULL: events without a user, kept for the job counts).
WITH job_users AS (
    SELECT dt, companyID, userID,
           SUM(nbJobs) FILTER (WHERE event_type = 'job_submitted')                            AS jobs_submitted,
           COUNT(*) FILTER (WHERE event_type = 'job_terminated' AND status = 'succeeded')     AS jobs_succeeded,
           COUNT(*) FILTER (WHERE event_type = 'job_terminated' AND status = 'failed')        AS jobs_failed,
           COUNT(*) FILTER (WHERE event_type = 'job_cancelled')                               AS jobs_cancelled,
           SUM(dataSize) FILTER (WHERE event_type = 'job_submitted')                          AS data_size_mb,
           MAX(event_time)                                                                    AS last_event_at
    FROM job_events
    WHERE dt BETWEEN $dt_from AND $dt_to
    GROUP BY dt, companyID, userID
),
-- Tenant and user events per session (NULL for events without one: tenant and user changes).
user_sessions AS (
    SELECT dt, companyID, userID, sessionID,
           COUNT(*) FILTER (WHERE event_type = 'user_login')                                  AS logins,
           COUNT(*) FILTER (WHERE event_type = 'user_added')                                  AS users_added,
           COUNT(*) FILTER (WHERE event_type = 'user_deleted')                                AS users_deleted,
           COUNT(*) FILTER (WHERE event_type IN ('user_login', 'user_logoff', 'user_session_timeoff')) AS presence,
           MAX(event_time)                                                                    AS last_event_at
    FROM tenant_events
    WHERE dt BETWEEN $dt_from AND $dt_to
    GROUP BY dt, companyID, userID, sessionID
),
-- Per user: a session counts when the user logged in with it.
tenant_users AS (
    SELECT dt, companyID, userID,
           SUM(logins) AS logins,
           COUNT(sessionID) FILTER (WHERE logins > 0) AS sessions,
           SUM(users_added) AS users_added,
           SUM(users_deleted) AS users_deleted,
           SUM(presence) AS presence,
           MAX(last_event_at) AS last_event_at
    FROM user_sessions
    GROUP BY dt, companyID, userID
),
-- One row per user and day (and one per side for events without a user).
users AS (
    SELECT COALESCE(j.dt, t.dt) AS dt, COALESCE(j.companyID, t.companyID) AS companyID,
           COALESCE(j.userID, t.userID) AS userID,
           j.userID IS NOT NULL OR t.presence > 0 AS active,
           j.jobs_submitted, j.jobs_succeeded, j.jobs_failed, j.jobs_cancelled, j.data_size_mb,
           t.logins, t.sessions, t.users_added, t.users_deleted,
           GREATEST(j.last_event_at, t.last_event_at) AS last_event_at
    FROM job_users j
    FULL JOIN tenant_users t ON t.dt = j.dt AND t.companyID = j.companyID AND t.userID = j.userID
)
SELECT dt, companyID,
       COALESCE(SUM(jobs_submitted), 0)             AS jobs_submitted,
       COALESCE(SUM(jobs_succeeded), 0)             AS jobs_succeeded,
       COALESCE(SUM(jobs_failed), 0)                AS jobs_failed,
       COALESCE(SUM(jobs_cancelled), 0)             AS jobs_cancelled,
       COALESCE(SUM(data_size_mb), 0)               AS data_size_mb,
       COALESCE(SUM(logins), 0)                     AS logins,
       COALESCE(SUM(sessions), 0)                   AS sessions,
       COUNT(userID) FILTER (WHERE active)          AS active_users,
       COALESCE(SUM(users_added), 0)                AS users_added,
       COALESCE(SUM(users_deleted), 0)              AS users_deleted,
       MAX(last_event_at)                           AS last_event_at
FROM users
GROUP BY dt, companyID
