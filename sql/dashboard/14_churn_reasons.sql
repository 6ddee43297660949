-- title: Why they are at risk: the 15 riskiest companies, their score and the model's holdout precision
-- sheet: Churn
-- chart: table
-- risk_reasons (companies_enriched): the parts of the churn rule that hold for the company and
-- the features outside the model's training range. model_precision: of the companies the model
-- flagged on held-out data, the share that churned.
SELECT companyID, industry, job30, job90,
       ROUND(churn_score, 3) AS churn_score,
       ROUND(model_precision, 3) AS model_precision,
       risk_reasons
FROM companies_enriched
WHERE as_of = (SELECT MAX(as_of) FROM companies_enriched WHERE as_of <= $as_of)
  AND churn_score IS NOT NULL
ORDER BY churn_score DESC, companyID
LIMIT 15
