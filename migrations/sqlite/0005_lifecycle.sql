-- voxrelay schema, version 5 (SQLite): which instance holds each call (so an instance that
-- restarts after a crash closes its own open calls and no other's), and each business's own
-- call limits.
-- Keep in step with migrations/postgres/0005_lifecycle.sql (the SQL is the same on both backends).

-- The instance (lifecycle.instance_id) that took the call; NULL for calls recorded before.
ALTER TABLE calls ADD COLUMN instance_id TEXT;
CREATE INDEX calls_open_by_instance ON calls (instance_id) WHERE ended_at_ms IS NULL;

-- Calls the business takes at once (NULL: only the instance's limits.max_calls applies).
ALTER TABLE businesses ADD COLUMN max_concurrent_calls BIGINT CHECK (max_concurrent_calls >= 1);
-- The business's longest call, seconds (NULL: limits.max_call_duration_s).
ALTER TABLE businesses ADD COLUMN max_call_duration_s BIGINT CHECK (max_call_duration_s >= 1);
