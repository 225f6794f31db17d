-- voxrelay schema, version 4 (SQLite): business hours and required prompt sections, the experiment
-- a call ran in, and each call's summary (what the caller experienced, counted when it ends).
-- Times and latencies are BIGINT milliseconds, counts are BIGINT.
-- Keep in step with migrations/postgres/0004_summaries.sql (the SQL is the same on both backends).

-- Opening hours as free text (the `business.hours` template variable; empty: not set).
ALTER TABLE businesses ADD COLUMN hours TEXT NOT NULL DEFAULT '';
-- Sections every prompt version of the business must have, one name a line (empty: none).
ALTER TABLE businesses ADD COLUMN required_sections TEXT NOT NULL DEFAULT '';

-- The running experiment that picked the call's prompt version (NULL outside experiments).
ALTER TABLE calls ADD COLUMN experiment_id TEXT;

-- The call's summary, written with its end. NULL until the call ends (and a latency stays NULL
-- when there was nothing to measure: no caller turn answered).
ALTER TABLE calls ADD COLUMN turns BIGINT CHECK (turns >= 0);
ALTER TABLE calls ADD COLUMN turn_p50_ms BIGINT CHECK (turn_p50_ms >= 0);
ALTER TABLE calls ADD COLUMN turn_max_ms BIGINT CHECK (turn_max_ms >= 0);
ALTER TABLE calls ADD COLUMN barge_ins BIGINT CHECK (barge_ins >= 0);
ALTER TABLE calls ADD COLUMN frames_dropped BIGINT CHECK (frames_dropped >= 0);
ALTER TABLE calls ADD COLUMN upstream_errors BIGINT CHECK (upstream_errors >= 0);
ALTER TABLE calls ADD COLUMN total_tokens BIGINT CHECK (total_tokens >= 0);
ALTER TABLE calls ADD COLUMN echo_events BIGINT CHECK (echo_events >= 0);
ALTER TABLE calls ADD COLUMN guard_blocks BIGINT CHECK (guard_blocks >= 0);

CREATE INDEX calls_experiment ON calls (experiment_id, variant);
