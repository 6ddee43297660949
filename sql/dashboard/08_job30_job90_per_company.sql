-- title: Jobs in the last 30 and 90 days per company (top 25 by job90)
-- sheet: Jobs
-- chart: bar
-- x: companyID
-- y: job30, job90
-- The company filter applies ($company is '' for all companies).
SELECT companyID, job30, job90
FROM tenants
WHERE as_of = $as_of
  AND ($company = '' OR companyID = $company)
ORDER BY job90 DESC, companyID
LIMIT 25
