-- title: Customers per industry
-- sheet: Customer Monitoring
-- chart: doughnut
-- x: industry
-- y: customers
-- The seed's donut: how many customers each industry has on the selected date.
SELECT COALESCE(industry, 'unknown') AS industry,
       COUNT(*) AS customers
FROM tenants
WHERE as_of = $as_of
GROUP BY 1
ORDER BY customers DESC, industry
