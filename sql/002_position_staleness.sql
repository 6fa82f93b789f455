-- Stores created before positions recorded how old their mark is: add the columns (no-op on new stores,
-- where 001 creates them). Old rows read mark_ts = 1970 and stale = false.
ALTER TABLE positions ADD COLUMN IF NOT EXISTS mark_ts DateTime64(9, 'UTC') AFTER value_account;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS stale Bool AFTER mark_ts;
