-- Jobs submitted per tenant per day (the README's first query).
-- nbJobs counts the jobs one submission started (legacy records default to 1).
-- The filter on dt prunes whole partition folders before any file is read.
SELECT dt,
       companyID,
       SUM(nbJobs)            AS jobs_submitted,
       COUNT(DISTINCT userID) AS users
FROM job_events
WHERE event_type = 'job_submitted'
  AND dt >= '2026-11-14'
GROUP BY dt, companyID
ORDER BY dt DESC, jobs_submitted DESC, companyID
LIMIT 15
