-- churn_features: the Company entity the churn model scores (../shared/spec/scoring.md), as of
-- $as_of, from the tenants snapshot of that date. riskOfChurn is the latest successful score's
-- label up to the as-of date, NULL when the company was never scored.
WITH latest_score AS (
    SELECT companyID,
           last_value(churn ORDER BY scored_at) AS churn
    FROM churn_scores
    WHERE dt <= $as_of
      AND status = 'scored'
    GROUP BY companyID
)
SELECT t.as_of,
       t.companyID,
       t.industry,
       t.revenu,
       t.employees,
       t.job30,
       t.job90,
       t.monthlyFee,
       t.totalFee,
       s.churn AS riskOfChurn
FROM tenants t
LEFT JOIN latest_score s ON s.companyID = t.companyID
WHERE t.as_of = $as_of
