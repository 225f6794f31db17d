-- voxrelay schema, version 1 (PostgreSQL).
-- Ids are TEXT, times are BIGINT milliseconds since the Unix epoch (UTC).
-- Keep in step with migrations/sqlite/0001_init.sql.

CREATE TABLE businesses (
    id                    TEXT    NOT NULL PRIMARY KEY,
    name                  TEXT    NOT NULL,
    language              TEXT    NOT NULL DEFAULT 'en',
    voice                 TEXT    NOT NULL DEFAULT 'marin',
    ai_prompt             TEXT    NOT NULL DEFAULT '',
    outbound_ai_prompt    TEXT    NOT NULL DEFAULT '',
    greeting_instructions TEXT    NOT NULL DEFAULT '',
    created_at_ms         BIGINT  NOT NULL,
    updated_at_ms         BIGINT  NOT NULL
);

CREATE INDEX businesses_created ON businesses (created_at_ms, id);

CREATE TABLE phone_numbers (
    e164        TEXT NOT NULL PRIMARY KEY,
    business_id TEXT NOT NULL REFERENCES businesses (id)
);

CREATE INDEX phone_numbers_business ON phone_numbers (business_id);

CREATE TABLE calls (
    call_sid            TEXT   NOT NULL PRIMARY KEY,
    stream_sid          TEXT,
    business_id         TEXT   NOT NULL,
    direction           TEXT   NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    from_number         TEXT   NOT NULL,
    to_number           TEXT   NOT NULL,
    started_at_ms       BIGINT NOT NULL,
    ended_at_ms         BIGINT,
    greeting_latency_ms BIGINT CHECK (greeting_latency_ms >= 0),
    end_reason          TEXT
);

CREATE INDEX calls_business_started ON calls (business_id, started_at_ms);
