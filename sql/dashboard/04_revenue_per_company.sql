-- title: Revenue per company (top 20)
-- sheet: Customer Monitoring
-- chart: bar
-- x: companyID
-- y: revenu
-- `revenu` is the producers' spelling.
SELECT companyID, revenu
FROM tenants
WHERE as_of = $as_of
ORDER BY revenu DESC NULLS LAST, companyID
LIMIT 20
