-- The companies most at risk of churning, as of the latest run date: the customer dataset with
-- its churn risk (companies_enriched), riskiest first, with why: risk_reasons names the parts of
-- the churn rule that hold and the features outside the model's training range (such a score is
-- an extrapolation); model_precision is how often a company the model flags churns (holdout).
SELECT companyID,
       industry,
       job30,
       job90,
       minimal_activity,
       riskOfChurn,
       ROUND(churn_score, 3) AS churn_score,
       ROUND(model_precision, 3) AS model_precision,
       risk_reasons
FROM companies_enriched
WHERE as_of = (SELECT MAX(as_of) FROM companies_enriched)
ORDER BY churn_score DESC, companyID
LIMIT 15
