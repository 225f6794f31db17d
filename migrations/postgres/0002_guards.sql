-- voxrelay schema, version 2 (PostgreSQL): inline guards.
-- Ids are TEXT, times are BIGINT milliseconds since the Unix epoch (UTC), scores and weights are
-- DOUBLE PRECISION, flags are INTEGER 0/1 (read the same way on both backends).
-- Keep in step with migrations/sqlite/0002_guards.sql.

-- What the guards do when a caller transcript scores block: monitor | gate | flag.
ALTER TABLE businesses
    ADD COLUMN guard_policy TEXT NOT NULL DEFAULT 'monitor'
    CHECK (guard_policy IN ('monitor', 'gate', 'flag'));

-- Every guard decision. `detail` holds only redacted text; `rules` is a comma-separated list of
-- rule ids (empty when none fired).
CREATE TABLE call_events (
    id          TEXT             NOT NULL PRIMARY KEY,
    call_sid    TEXT             NOT NULL,
    business_id TEXT             NOT NULL,
    at_ms       BIGINT           NOT NULL,
    kind        TEXT             NOT NULL,
    score       DOUBLE PRECISION,
    rules       TEXT             NOT NULL DEFAULT '',
    action      TEXT             NOT NULL,
    detail      TEXT             NOT NULL DEFAULT ''
);

CREATE INDEX call_events_call ON call_events (call_sid, at_ms);

-- Sanitizer rules a business adds, or overrides by id, on top of the configured rule set.
CREATE TABLE business_guard_rules (
    business_id TEXT             NOT NULL REFERENCES businesses (id),
    rule_id     TEXT             NOT NULL,
    category    TEXT             NOT NULL,
    pattern     TEXT             NOT NULL,
    weight      DOUBLE PRECISION NOT NULL,
    enabled     INTEGER          NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    PRIMARY KEY (business_id, rule_id)
);
