-- title: Each job's last run and freshness (runs of the last 30 days)
-- sheet: Operations
-- chart: table
-- Freshness is measured from now, whatever the selected date.
SELECT job,
       LAST_VALUE(status ORDER BY ended_at) AS last_status,
       MAX(ended_at) AS last_run_at,
       MAX(ended_at) FILTER (WHERE status = 'succeeded') AS last_success_at,
       ROUND(EXTRACT(EPOCH FROM now() - MAX(ended_at) FILTER (WHERE status = 'succeeded')) / 3600.0, 1) AS hours_since_success,
       LAST_VALUE(engine ORDER BY ended_at) AS engine,
       COUNT(*) FILTER (WHERE status = 'failed') AS failed_runs
FROM runner_runs
WHERE dt >= CURRENT_DATE - INTERVAL '30 days'
GROUP BY job
ORDER BY job
