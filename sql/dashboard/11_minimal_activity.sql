-- title: Customers doing the very minimum
-- sheet: Churn
-- chart: table
-- minimal_activity: fewer than 5 jobs in 30 days or fewer than 20 in 90 days (the seed's rule).
SELECT companyID, name, industry, users, job30, job90, last_activity_at
FROM tenants
WHERE as_of = $as_of AND minimal_activity
ORDER BY job90, job30, companyID
