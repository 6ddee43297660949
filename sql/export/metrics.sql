-- A tenant's row of the customer dataset as of $as_of.
SELECT * FROM tenants WHERE as_of = $as_of
