-- title: Bottom 10 companies by jobs in the last 30 days
-- sheet: Jobs
-- chart: hbar
-- x: companyID
-- y: job30
SELECT companyID, job30
FROM tenants
WHERE as_of = $as_of
ORDER BY job30, companyID
LIMIT 10
