-- title: Churn risk: the 15 riskiest companies (latest scoring on or before the date)
-- sheet: Churn
-- chart: hbar
-- x: companyID
-- y: churn_score
-- From companies_enriched, the Company entity with the score of its run date.
SELECT companyID, ROUND(churn_score, 3) AS churn_score
FROM companies_enriched
WHERE as_of = (SELECT MAX(as_of) FROM companies_enriched WHERE as_of <= $as_of)
  AND churn_score IS NOT NULL
ORDER BY churn_score DESC, companyID
LIMIT 15
