-- A tenant's job events of the day $as_of.
SELECT * FROM job_events WHERE dt = $as_of
