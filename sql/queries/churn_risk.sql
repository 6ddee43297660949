-- The companies most at risk of churning, as of the latest run date: the customer dataset with
-- its churn risk (companies_enriched), riskiest first. out_of_range names the features outside
-- the model's training range (such a score is an extrapolation).
SELECT companyID,
       industry,
       job30,
       job90,
       minimal_activity,
       riskOfChurn,
       ROUND(churn_score, 3) AS churn_score,
       out_of_range
FROM companies_enriched
WHERE as_of = (SELECT MAX(as_of) FROM companies_enriched)
ORDER BY churn_score DESC, companyID
LIMIT 15
