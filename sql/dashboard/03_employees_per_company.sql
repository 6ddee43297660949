-- title: Employees per company (top 20)
-- sheet: Customer Monitoring
-- chart: bar
-- x: companyID
-- y: employees
SELECT companyID, employees
FROM tenants
WHERE as_of = $as_of
ORDER BY employees DESC NULLS LAST, companyID
LIMIT 20
