-- title: Quarantined records by reason (30 days of arrivals)
-- sheet: Operations
-- chart: stacked
-- x: dt
-- series: reason_code
-- y: records
-- Records the runner could not accept, by arrival date; `runner query` on `quarantine` shows each
-- with its source object, offset, raw text and reason.
SELECT dt, reason_code, COUNT(*) AS records
FROM quarantine
WHERE dt BETWEEN CAST($as_of AS DATE) - INTERVAL '29 days' AND $as_of
GROUP BY dt, reason_code
ORDER BY dt, reason_code
