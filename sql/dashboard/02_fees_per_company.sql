-- title: Monthly and total fee per company (top 20 by total fee)
-- sheet: Customer Monitoring
-- chart: bar
-- x: companyID
-- y: monthlyFee, totalFee
SELECT companyID, monthlyFee, totalFee
FROM tenants
WHERE as_of = $as_of
ORDER BY totalFee DESC NULLS LAST, companyID
LIMIT 20
