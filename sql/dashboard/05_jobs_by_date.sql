-- title: Jobs submitted and data size by date (90 days)
-- sheet: Jobs
-- chart: line
-- x: date
-- y: jobs_submitted
-- y2: data_size_mb
-- The company filter applies ($company is '' for all companies). dataSize is in MB (events.md).
SELECT dt AS date,
       SUM(jobSubmitted) AS jobs_submitted,
       SUM(dataSize) AS data_size_mb
FROM jobs_daily
WHERE dt BETWEEN CAST($as_of AS DATE) - INTERVAL '89 days' AND $as_of
  AND ($company = '' OR company_id = $company)
GROUP BY dt
ORDER BY dt
