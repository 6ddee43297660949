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
-- Every company on every day of the run, with what that day brought.
grid AS (
    SELECT c.companyID, d.dt,
           p.name, p.industry, p.revenu, p.employees, p.monthlyFee, p.totalFee,
           a.users_delta, a.last_event_at, s.scored_at,
           COALESCE(a.jobs_submitted, 0) - COALESCE(l30.jobs_submitted, 0) AS job30_delta,
           COALESCE(a.jobs_submitted, 0) - COALESCE(l90.jobs_submitted, 0) AS job90_delta,
           (p.companyID IS NOT NULL OR a.companyID IS NOT NULL) AS seen
    FROM companies c
    CROSS JOIN days d
    LEFT JOIN profile_day p ON p.companyID = c.companyID AND p.dt = d.dt
    LEFT JOIN activity_day a ON a.companyID = c.companyID AND a.dt = d.dt
    LEFT JOIN score_day s ON s.companyID = c.companyID AND s.dt = d.dt
    LEFT JOIN leaving l30 ON l30.companyID = c.companyID AND l30.dt = d.dt - INTERVAL '30 days'
    LEFT JOIN leaving l90 ON l90.companyID = c.companyID AND l90.dt = d.dt - INTERVAL '90 days'
),
-- Running over the days of the run: for each profile field the newest day that set it.
running AS (
    SELECT companyID, dt,
           MAX(CASE WHEN name IS NOT NULL THEN dt END) OVER w       AS name_day,
           MAX(CASE WHEN industry IS NOT NULL THEN dt END) OVER w   AS industry_day,
           MAX(CASE WHEN revenu IS NOT NULL THEN dt END) OVER w     AS revenu_day,
           MAX(CASE WHEN employees IS NOT NULL THEN dt END) OVER w  AS employees_day,
           MAX(CASE WHEN monthlyFee IS NOT NULL THEN dt END) OVER w AS monthlyFee_day,
           MAX(CASE WHEN totalFee IS NOT NULL THEN dt END) OVER w   AS totalFee_day,
           name, industry, revenu, employees, monthlyFee, totalFee,
           SUM(users_delta) OVER w                                  AS users_delta,
           SUM(job30_delta) OVER w                                  AS job30_delta,
           SUM(job90_delta) OVER w                                  AS job90_delta,
           MAX(last_event_at) OVER w                                AS last_event_at,
           MAX(scored_at) OVER w                                    AS scored_at,
           BOOL_OR(seen) OVER w                                     AS seen
    FROM grid
    WINDOW w AS (PARTITION BY companyID ORDER BY dt ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
),
-- Each field's value on the day that set it: the first row of the rows sharing that day (a
-- window, not a join back to profile_day per field, which scanned the tenant events again for
-- each; no IGNORE NULLS, which Ballista does not carry).
carried AS (
    SELECT r.*,
           first_value(name) OVER (PARTITION BY companyID, name_day ORDER BY dt)                   AS name_set,
           first_value(industry) OVER (PARTITION BY companyID, industry_day ORDER BY dt)           AS industry_set,
           first_value(revenu) OVER (PARTITION BY companyID, revenu_day ORDER BY dt)               AS revenu_set,
           first_value(employees) OVER (PARTITION BY companyID, employees_day ORDER BY dt)         AS employees_set,
           first_value(monthlyFee) OVER (PARTITION BY companyID, monthlyFee_day ORDER BY dt)       AS monthlyFee_set,
           first_value(totalFee) OVER (PARTITION BY companyID, totalFee_day ORDER BY dt)           AS totalFee_set
    FROM running r
)
-- ... on top of the state of the day before the run.
SELECT r.dt,
       r.companyID,
       COALESCE(r.name_set, p.name)                              AS name,
       COALESCE(r.industry_set, p.industry)                      AS industry,
       COALESCE(r.revenu_set, p.revenu)                          AS revenu,
       COALESCE(r.employees_set, p.employees)                    AS employees,
       COALESCE(r.monthlyFee_set, p.monthlyFee)                  AS monthlyFee,
       COALESCE(r.totalFee_set, p.totalFee)                      AS totalFee,
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
FROM carried r
LEFT JOIN prev p         ON p.companyID = r.companyID
-- The scoring day that holds the running latest score (a later day cannot: its scores are later).
LEFT JOIN score_day s    ON s.companyID = r.companyID AND s.scored_at = r.scored_at AND s.dt <= r.dt
