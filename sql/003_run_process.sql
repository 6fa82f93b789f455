-- Which process runs a run: a row left `running` whose process is gone from its host is shown as stale.
-- Status values: running | finished | failed | interrupted (SIGINT or SIGTERM; the same command resumes).
-- No-op on stores that have the columns; rows written before read pid = 0 and host = ''.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS pid UInt32 AFTER summary;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS host String AFTER pid;
