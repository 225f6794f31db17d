-- voxrelay schema, version 9 (PostgreSQL): transfer targets and transfer outcomes.
-- Keep in step with migrations/sqlite/0009_transfers.sql (the SQL is the same on both backends).

-- The people a business's calls may be put through to by the built-in transfer_call tool: a
-- JSON array of {"name": "front desk", "number": "+14155550100"} (names unique, numbers E.164).
ALTER TABLE businesses ADD COLUMN transfer_targets TEXT NOT NULL DEFAULT '[]';

-- One row per signed <Dial action> callback to /twilio/dial-status: the target's name, how the
-- dial ended (answered, busy, no-answer, failed, canceled) and DialCallDuration, when given.
CREATE TABLE call_transfers (
    call_sid    TEXT   NOT NULL,
    at_ms       BIGINT NOT NULL,
    target      TEXT   NOT NULL,
    outcome     TEXT   NOT NULL,
    duration_s  BIGINT
);

CREATE INDEX call_transfers_call ON call_transfers (call_sid, at_ms);
