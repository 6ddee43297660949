-- tenant_state: per tenant and event day dt, the tenant's all-time state at the end of that
-- day: its profile, users, last activity and latest churn score. The running state tenants reads
-- instead of all history (a snapshot then reads one day of it plus its 30/90-day windows).
--
-- Cumulative and incremental: the runner rebuilds from the earliest day whose inputs changed
-- (late events included) through the newest day built, passing that run of days as
-- $dt_from..$dt_to (DATEs, inclusive), in one query seeded from this table's own day before
-- $dt_from (read as published). Each field means exactly what sql/tenants.sql always meant:
--   profile fields: the latest non-null value from tenant_created / tenant_updated events up to
--     the day (an event's day is its event time's day, so "latest" is the latest day that has
--     one, then the latest event of that day);
--   users: users added minus users deleted up to the day (tenant_activity_daily);
--   last_activity_at: the newest event of any kind up to the day;
--   job30, job90: jobs submitted on the 30 (90) days ending with the day, kept as running sums:
--     a day adds its own jobs and takes off those of the day leaving the window, so a day reads
--     three days of tenant_activity_daily ($dt, 30 and 90 days before), not 90;
--   riskOfChurn, risk_scored_on: the latest successful score (by scored_at) among the scoring
--     days up to the day; risk_scored_at keeps its time for the next day's comparison;
--   in_tenants: the company had a profile event or any activity up to the day (scores alone do
--     not make a tenant).
WITH prev AS (
    SELECT *
    FROM tenant_state
    WHERE dt = CAST($dt_from AS DATE) - INTERVAL '1 day'
),
days AS (
    SELECT CAST(d AS DATE) AS dt
    FROM unnest(range(CAST($dt_from AS DATE), CAST($dt_to AS DATE) + INTERVAL '1 day', INTERVAL '1 day')) AS t(d)
),
profile_day AS (
    SELECT companyID, dt,
           last_value(name ORDER BY event_time)       FILTER (WHERE name IS NOT NULL)       AS name,
           last_value(industry ORDER BY event_time)   FILTER (WHERE industry IS NOT NULL)   AS industry,
           last_value(revenu ORDER BY event_time)     FILTER (WHERE revenu IS NOT NULL)     AS revenu,
           last_value(employees ORDER BY event_time)  FILTER (WHERE employees IS NOT NULL)  AS employees,
           last_value(monthlyFee ORDER BY event_time) FILTER (WHERE monthlyFee IS NOT NULL) AS monthlyFee,
           last_value(totalFee ORDER BY event_time)   FILTER (WHERE totalFee IS NOT NULL)   AS totalFee
    FROM tenant_events
    WHERE dt BETWEEN $dt_from AND $dt_to
      AND event_type IN ('tenant_created', 'tenant_updated')
    GROUP BY companyID, dt
),
activity_day AS (
    SELECT companyID, dt, users_added - users_deleted AS users_delta, last_event_at, jobs_submitted
    FROM tenant_activity_daily
    WHERE dt BETWEEN $dt_from AND $dt_to
),
-- The days leaving the 30- and 90-day windows of the days rebuilt.
leaving AS (
    SELECT companyID, dt, jobs_submitted
    FROM tenant_activity_daily
    WHERE dt BETWEEN CAST($dt_from AS DATE) - INTERVAL '30 days' AND CAST($dt_to AS DATE) - INTERVAL '30 days'
       OR dt BETWEEN CAST($dt_from AS DATE) - INTERVAL '90 days' AND CAST($dt_to AS DATE) - INTERVAL '90 days'
),
score_day AS (
    SELECT companyID, dt,
           last_value(churn ORDER BY scored_at) AS churn,
           MAX(scored_at)                       AS scored_at
    FROM churn_scores
    WHERE dt BETWEEN $dt_from AND $dt_to
      AND status = 'scored'
    GROUP BY companyID, dt
),
companies AS (
    SELECT companyID FROM prev
    UNION SELECT companyID FROM profile_day
    UNION SELECT companyID FROM activity_day
    UNION SELECT companyID FROM leaving
    UNION SELECT companyID FROM score_day
),
-- Each profile field's value from the day that set it to the next day that sets it (exclusive;
-- NULL: still in force at the end of the run).
profile_spans AS (
    SELECT companyID, dt,
           name,       MIN(CASE WHEN name IS NOT NULL THEN dt END) OVER later       AS name_until,
           industry,   MIN(CASE WHEN industry IS NOT NULL THEN dt END) OVER later   AS industry_until,
           revenu,     MIN(CASE WHEN revenu IS NOT NULL THEN dt END) OVER later     AS revenu_until,
           employees,  MIN(CASE WHEN employees IS NOT NULL THEN dt END) OVER later  AS employees_until,
           monthlyFee, MIN(CASE WHEN monthlyFee IS NOT NULL THEN dt END) OVER later AS monthlyFee_until,
           totalFee,   MIN(CASE WHEN totalFee IS NOT NULL THEN dt END) OVER later   AS totalFee_until
    FROM profile_day
    WINDOW later AS (PARTITION BY companyID ORDER BY dt ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)
),
-- Per company and day of the run, each field as the run's profile events left it (NULL: no day
-- of the run set it yet), and whether the day had a profile event. A profile day meets every
-- later day of the run; of those pairs, exactly one per field holds the day in its field's span.
profile_asof AS (
    SELECT s.companyID, d.dt,
           MAX(CASE WHEN s.name IS NOT NULL AND (s.name_until IS NULL OR d.dt < s.name_until) THEN s.name END) AS name,
           MAX(CASE WHEN s.industry IS NOT NULL AND (s.industry_until IS NULL OR d.dt < s.industry_until) THEN s.industry END) AS industry,
           MAX(CASE WHEN s.revenu IS NOT NULL AND (s.revenu_until IS NULL OR d.dt < s.revenu_until) THEN s.revenu END) AS revenu,
           MAX(CASE WHEN s.employees IS NOT NULL AND (s.employees_until IS NULL OR d.dt < s.employees_until) THEN s.employees END) AS employees,
           MAX(CASE WHEN s.monthlyFee IS NOT NULL AND (s.monthlyFee_until IS NULL OR d.dt < s.monthlyFee_until) THEN s.monthlyFee END) AS monthlyFee,
           MAX(CASE WHEN s.totalFee IS NOT NULL AND (s.totalFee_until IS NULL OR d.dt < s.totalFee_until) THEN s.totalFee END) AS totalFee,
           BOOL_OR(s.dt = d.dt)                                                                           AS profile_event
    FROM profile_spans s
    JOIN days d ON s.dt <= d.dt
    GROUP BY s.companyID, d.dt
),
-- Every company on every day of the run, with what that day brought and its profile as of then.
grid AS (
    SELECT c.companyID, d.dt,
           p.name, p.industry, p.revenu, p.employees, p.monthlyFee, p.totalFee,
           a.users_delta, a.last_event_at, s.scored_at,
           COALESCE(a.jobs_submitted, 0) - COALESCE(l30.jobs_submitted, 0) AS job30_delta,
           COALESCE(a.jobs_submitted, 0) - COALESCE(l90.jobs_submitted, 0) AS job90_delta,
           (COALESCE(p.profile_event, false) OR a.companyID IS NOT NULL) AS seen
    FROM companies c
    CROSS JOIN days d
    LEFT JOIN profile_asof p ON p.companyID = c.companyID AND p.dt = d.dt
    LEFT JOIN activity_day a ON a.companyID = c.companyID AND a.dt = d.dt
    LEFT JOIN score_day s ON s.companyID = c.companyID AND s.dt = d.dt
    LEFT JOIN leaving l30 ON l30.companyID = c.companyID AND l30.dt = d.dt - INTERVAL '30 days'
    LEFT JOIN leaving l90 ON l90.companyID = c.companyID AND l90.dt = d.dt - INTERVAL '90 days'
),
-- Running over the days of the run.
running AS (
    SELECT companyID, dt, name, industry, revenu, employees, monthlyFee, totalFee,
           SUM(users_delta) OVER w                                  AS users_delta,
           SUM(job30_delta) OVER w                                  AS job30_delta,
           SUM(job90_delta) OVER w                                  AS job90_delta,
           MAX(last_event_at) OVER w                                AS last_event_at,
           MAX(scored_at) OVER w                                    AS scored_at,
           BOOL_OR(seen) OVER w                                     AS seen
    FROM grid
    WINDOW w AS (PARTITION BY companyID ORDER BY dt ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
)
-- ... on top of the state of the day before the run.
SELECT r.dt,
       r.companyID,
       COALESCE(r.name, p.name)                              AS name,
       COALESCE(r.industry, p.industry)                      AS industry,
       COALESCE(r.revenu, p.revenu)                          AS revenu,
       COALESCE(r.employees, p.employees)                    AS employees,
       COALESCE(r.monthlyFee, p.monthlyFee)                  AS monthlyFee,
       COALESCE(r.totalFee, p.totalFee)                      AS totalFee,
       COALESCE(p.users, 0) + COALESCE(r.users_delta, 0)         AS users,
       GREATEST(p.last_activity_at, r.last_event_at)             AS last_activity_at,
       COALESCE(p.job30, 0) + r.job30_delta                      AS job30,
       COALESCE(p.job90, 0) + r.job90_delta                      AS job90,
       CASE WHEN r.scored_at IS NULL OR p.risk_scored_at >= r.scored_at THEN p.riskOfChurn ELSE s.churn END
                                                                 AS riskOfChurn,
       CASE WHEN r.scored_at IS NULL OR p.risk_scored_at >= r.scored_at THEN p.risk_scored_on ELSE s.dt END
                                                                 AS risk_scored_on,
       GREATEST(p.risk_scored_at, r.scored_at)                   AS risk_scored_at,
       COALESCE(p.in_tenants, false) OR COALESCE(r.seen, false)  AS in_tenants
FROM running r
LEFT JOIN prev p         ON p.companyID = r.companyID
-- The scoring day that holds the running latest score (a later day cannot: its scores are later).
LEFT JOIN score_day s    ON s.companyID = r.companyID AND s.scored_at = r.scored_at AND s.dt <= r.dt
