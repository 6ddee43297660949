-- The definition of tenants before tenant_state (issue 24): every all-time field read from all
-- history. tests/golden.rs checks that tenants, now read from the running state, equals this on
-- several consecutive days with late events and scores in between. Not a job: a reference.
-- tenants: the customer dataset, one row per tenant as of $as_of (a DATE), partitioned by as_of.
--
-- Windows, inclusive of the as-of date (all days are UTC event days, dt):
--   job30 = jobs submitted (sum of nbJobs) on the 30 days dt in [$as_of - 29 days, $as_of]
--   job90 = jobs submitted on the 90 days dt in [$as_of - 89 days, $as_of]
-- They come from tenant_activity_daily, not from rescanning raw events.
-- Profile fields (name, industry, revenu, employees, monthlyFee, totalFee) are each the latest
-- non-null value from tenant_created / tenant_updated events up to the as-of date.
-- users = users added minus users deleted up to the as-of date.
-- activity_rank 1 is the least active tenant (fewest job30, then job90); minimal_activity marks
-- the customers doing the very minimum (job30 < 5 or job90 < 20, the churn rule of the seed).
-- riskOfChurn is the latest successful score published before this job runs, and
-- risk_scored_on the date it was scored for: tenants feeds the scoring, so it runs before this
-- date's scores exist, and shows the previous run's risk, dated (both NULL: never scored).
-- The risk of this run date is in companies_enriched, written after score_churn.
WITH profile AS (
    SELECT companyID,
           last_value(name ORDER BY event_time)       FILTER (WHERE name IS NOT NULL)       AS name,
           last_value(industry ORDER BY event_time)   FILTER (WHERE industry IS NOT NULL)   AS industry,
           last_value(revenu ORDER BY event_time)     FILTER (WHERE revenu IS NOT NULL)     AS revenu,
           last_value(employees ORDER BY event_time)  FILTER (WHERE employees IS NOT NULL)  AS employees,
           last_value(monthlyFee ORDER BY event_time) FILTER (WHERE monthlyFee IS NOT NULL) AS monthlyFee,
           last_value(totalFee ORDER BY event_time)   FILTER (WHERE totalFee IS NOT NULL)   AS totalFee
    FROM tenant_events
    WHERE dt <= $as_of
      AND event_type IN ('tenant_created', 'tenant_updated')
    GROUP BY companyID
),
activity AS (
    SELECT companyID,
           SUM(users_added) - SUM(users_deleted)                                        AS users,
           MAX(last_event_at)                                                           AS last_activity_at,
           SUM(jobs_submitted) FILTER (WHERE dt >= CAST($as_of AS DATE) - INTERVAL '29 days') AS job30,
           SUM(jobs_submitted) FILTER (WHERE dt >= CAST($as_of AS DATE) - INTERVAL '89 days') AS job90
    FROM tenant_activity_daily
    WHERE dt <= $as_of
    GROUP BY companyID
),
-- The latest successful churn score up to the as-of date (scores of earlier runs of score_churn:
-- the table is read as published, see jobs/tenants.toml). NULL when never scored.
latest_score AS (
    SELECT companyID,
           last_value(churn ORDER BY scored_at) AS riskOfChurn,
           last_value(dt ORDER BY scored_at)    AS risk_scored_on
    FROM churn_scores
    WHERE dt <= $as_of
      AND status = 'scored'
    GROUP BY companyID
),
-- Every tenant with a profile or any activity: a FULL JOIN, so each side is computed once
-- (a UNION of their keys joined back to both made DataFusion compute each twice).
joined AS (
    SELECT COALESCE(p.companyID, a.companyID) AS companyID,
           p.name, p.industry, p.revenu, p.employees, p.monthlyFee, p.totalFee,
           COALESCE(a.users, 0)  AS users,
           a.last_activity_at,
           COALESCE(a.job30, 0)  AS job30,
           COALESCE(a.job90, 0)  AS job90
    FROM profile p
    FULL JOIN activity a ON a.companyID = p.companyID
)
SELECT CAST($as_of AS DATE) AS as_of,
       j.companyID, j.name, j.industry, j.revenu, j.employees, j.monthlyFee, j.totalFee,
       j.users, j.last_activity_at, j.job30, j.job90,
       RANK() OVER (ORDER BY j.job30, j.job90)   AS activity_rank,
       (j.job30 < 5 OR j.job90 < 20)             AS minimal_activity,
       s.riskOfChurn,
       s.risk_scored_on
FROM joined j
LEFT JOIN latest_score s ON s.companyID = j.companyID
