-- title: Bottom 10 companies by jobs in the last 90 days
-- sheet: Jobs
-- chart: hbar
-- x: companyID
-- y: job90
SELECT companyID, job90
FROM tenants
WHERE as_of = $as_of
ORDER BY job90, companyID
LIMIT 10
