-- tenants: the customer dataset, one row per tenant as of $as_of (a DATE), partitioned by as_of.
--
-- Windows, inclusive of the as-of date (all days are UTC event days, dt):
--   job30 = jobs submitted (sum of nbJobs) on the 30 days dt in [$as_of - 29 days, $as_of]
--   job90 = jobs submitted on the 90 days dt in [$as_of - 89 days, $as_of]
-- They come from tenant_activity_daily, not from rescanning raw events (as running sums kept
-- by tenant_state).
-- Profile fields (name, industry, revenu, employees, monthlyFee, totalFee) are each the latest
-- non-null value from tenant_created / tenant_updated events up to the as-of date.
-- users = users added minus users deleted up to the as-of date.
-- All of them (and the latest score below) come from tenant_state, the running state of every
-- tenant at the end of each day (sql/tenant_state.sql): a snapshot reads one day of it, not the
-- whole history nor the 90 days of its windows.
-- activity_rank 1 is the least active tenant (fewest job30, then job90); minimal_activity marks
-- the customers doing the very minimum (job30 < 5 or job90 < 20, the churn rule of the seed).
-- riskOfChurn is the latest successful score published before this job runs, and
-- risk_scored_on the date it was scored for: tenants feeds the scoring, so it runs before this
-- date's scores exist, and shows the previous run's risk, dated (both NULL: never scored).
-- The risk of this run date is in companies_enriched, written after score_churn.
-- The state at the end of the as-of date; the day before when that day's state is not built
-- (a dry run: the job keeping the state publishes nothing). Every company of a day is in the
-- next day's state, so with both days present each company's newest row is the as-of date's.
WITH ranked AS (
    SELECT companyID, name, industry, revenu, employees, monthlyFee, totalFee,
           users, last_activity_at, job30, job90, riskOfChurn, risk_scored_on, in_tenants,
           ROW_NUMBER() OVER (PARTITION BY companyID ORDER BY dt DESC) AS newest
    FROM tenant_state
    WHERE dt BETWEEN CAST($as_of AS DATE) - INTERVAL '1 day' AND $as_of
),
-- Every tenant with a profile or any activity up to the as-of date.
joined AS (
    SELECT companyID, name, industry, revenu, employees, monthlyFee, totalFee,
           users, last_activity_at, job30, job90, riskOfChurn, risk_scored_on
    FROM ranked
    WHERE newest = 1 AND in_tenants
)
SELECT CAST($as_of AS DATE) AS as_of,
       j.companyID, j.name, j.industry, j.revenu, j.employees, j.monthlyFee, j.totalFee,
       j.users, j.last_activity_at, j.job30, j.job90,
       RANK() OVER (ORDER BY j.job30, j.job90)   AS activity_rank,
       (j.job30 < 5 OR j.job90 < 20)             AS minimal_activity,
       j.riskOfChurn,
       j.risk_scored_on
FROM joined j
