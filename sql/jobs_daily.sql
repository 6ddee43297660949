-- jobs_daily: the QuickSight job sheet, one row per tenant, user and day.
--
-- Incremental like tenant_activity_daily: run once per changed day $dt, replacing its partition.
SELECT CAST($dt AS DATE)   AS dt,
       companyID           AS company_id,
       userID              AS userid,
       CAST($dt AS DATE)   AS date,
       SUM(dataSize)       AS dataSize,
       SUM(nbJobs)         AS jobSubmitted
FROM job_events
WHERE dt = $dt
  AND event_type = 'job_submitted'
GROUP BY companyID, userID
