-- jobs_daily: the QuickSight job sheet, one row per tenant, user and day.
--
-- Incremental like tenant_activity_daily: the runner passes each run of consecutive changed
-- days as $dt_from..$dt_to (DATEs, inclusive) and replaces those days' partitions.
SELECT dt,
       companyID           AS company_id,
       userID              AS userid,
       dt                  AS date,
       SUM(dataSize)       AS dataSize,
       SUM(nbJobs)         AS jobSubmitted
FROM job_events
WHERE dt BETWEEN $dt_from AND $dt_to
  AND event_type = 'job_submitted'
GROUP BY dt, companyID, userID
