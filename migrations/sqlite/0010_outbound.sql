-- voxrelay schema, version 10 (SQLite): outbound calls and their guard rails.
-- Keep in step with migrations/postgres/0010_outbound.sql (the SQL is the same on both backends).

-- The business's time zone (IANA, e.g. America/New_York), the hours it may call people in that
-- zone ("08:00-21:00" every day, or day ranges such as "Mon-Fri 09:00-18:00, Sat 10:00-13:00"),
-- how many calls it may place a minute, and what its voicemail says (a template with call.*).
ALTER TABLE businesses ADD COLUMN time_zone TEXT NOT NULL DEFAULT 'UTC';
ALTER TABLE businesses ADD COLUMN calling_hours TEXT NOT NULL DEFAULT '08:00-21:00';
ALTER TABLE businesses ADD COLUMN outbound_per_minute BIGINT NOT NULL DEFAULT 10;
ALTER TABLE businesses ADD COLUMN voicemail_message TEXT NOT NULL DEFAULT '';

-- One row per call placed (POST /api/v1/calls, voxrelay call place): the rate limit counts
-- these, and an instance that rebuilds the call reads its variables and Twilio's AnsweredBy
-- here. call_sid is 'pending:<uuid>' while Twilio is being asked.
CREATE TABLE outbound_calls (
    call_sid      TEXT    NOT NULL PRIMARY KEY,
    business_id   TEXT    NOT NULL,
    placed_at_ms  BIGINT  NOT NULL,
    to_number     TEXT    NOT NULL,
    variables     TEXT    NOT NULL DEFAULT '{}',
    forced        INTEGER NOT NULL DEFAULT 0 CHECK (forced IN (0, 1)),
    answered_by   TEXT
);

CREATE INDEX outbound_calls_business ON outbound_calls (business_id, placed_at_ms);
