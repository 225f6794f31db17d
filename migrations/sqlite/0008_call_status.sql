-- voxrelay schema, version 8 (SQLite): what Twilio's status callbacks report of each call.
-- Keep in step with migrations/postgres/0008_call_status.sql (the SQL is the same on both backends).

-- One row per signed callback to /twilio/status: queued, initiated, ringing, in-progress,
-- completed, busy, no-answer, failed or canceled; `duration_s` is Twilio's CallDuration (on
-- completed), `answered_by` its AnsweredBy (answering machine detection), when given.
CREATE TABLE call_statuses (
    call_sid    TEXT   NOT NULL,
    at_ms       BIGINT NOT NULL,
    status      TEXT   NOT NULL,
    duration_s  BIGINT,
    answered_by TEXT
);

CREATE INDEX call_statuses_call ON call_statuses (call_sid, at_ms);
