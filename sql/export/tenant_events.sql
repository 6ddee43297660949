-- A tenant's tenant and user events of the day $as_of.
SELECT * FROM tenant_events WHERE dt = $as_of
