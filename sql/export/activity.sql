-- A tenant's daily activity over the 90 days ending on $as_of.
SELECT * FROM tenant_activity_daily WHERE dt <= $as_of AND dt >= CAST($as_of AS DATE) - INTERVAL '89 days'
