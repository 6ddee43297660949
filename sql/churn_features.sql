-- churn_features: the Company entity the churn model scores (../shared/spec/scoring.md), as of
-- $as_of, from the tenants snapshot of that date. riskOfChurn is the latest successful score's
-- label up to the as-of date (taken by tenants from churn_scores), NULL when never scored.
SELECT t.as_of,
       t.companyID,
       t.industry,
       t.revenu,
       t.employees,
       t.job30,
       t.job90,
       t.monthlyFee,
       t.totalFee,
       t.riskOfChurn
FROM tenants t
WHERE t.as_of = $as_of
