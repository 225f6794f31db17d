-- voxrelay schema, version 3 (SQLite): prompt versions and A/B experiments.
-- Ids are TEXT, times are BIGINT milliseconds since the Unix epoch (UTC), counts are INTEGER.
-- Keep in step with migrations/postgres/0003_prompts.sql (the SQL is the same on both backends).

-- Every version of a business's prompt body, numbered 1, 2, 3... per (business, direction).
-- status: draft -> staging -> production -> archived (rollback makes an archived one production).
CREATE TABLE prompt_versions (
    id                TEXT    NOT NULL PRIMARY KEY,
    business_id       TEXT    NOT NULL REFERENCES businesses (id),
    direction         TEXT    NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    version           INTEGER NOT NULL CHECK (version >= 1),
    body              TEXT    NOT NULL,
    status            TEXT    NOT NULL
        CHECK (status IN ('draft', 'staging', 'production', 'archived')),
    parent_version_id TEXT    REFERENCES prompt_versions (id),
    compact_tokens    INTEGER CHECK (compact_tokens >= 0),
    full_tokens       INTEGER CHECK (full_tokens >= 0),
    author            TEXT    NOT NULL,
    note              TEXT    NOT NULL DEFAULT '',
    created_at_ms     BIGINT  NOT NULL,
    UNIQUE (business_id, direction, version)
);

-- At most one production version per (business, direction), enforced by the database: a second
-- row with status 'production' fails with a unique violation.
CREATE UNIQUE INDEX prompt_versions_one_production
    ON prompt_versions (business_id, direction) WHERE status = 'production';

-- A/B experiments between two versions of the same (business, direction). traffic_percent is
-- the share of calls, 0 to 100, that get the variant version.
CREATE TABLE experiments (
    id                 TEXT    NOT NULL PRIMARY KEY,
    business_id        TEXT    NOT NULL REFERENCES businesses (id),
    direction          TEXT    NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    control_version_id TEXT    NOT NULL REFERENCES prompt_versions (id),
    variant_version_id TEXT    NOT NULL REFERENCES prompt_versions (id),
    traffic_percent    INTEGER NOT NULL CHECK (traffic_percent >= 0 AND traffic_percent <= 100),
    status             TEXT    NOT NULL CHECK (status IN ('draft', 'running', 'stopped')),
    started_at_ms      BIGINT,
    ended_at_ms        BIGINT,
    created_at_ms      BIGINT  NOT NULL
);

-- At most one running experiment per (business, direction).
CREATE UNIQUE INDEX experiments_one_running
    ON experiments (business_id, direction) WHERE status = 'running';

CREATE INDEX experiments_business ON experiments (business_id, direction, created_at_ms);

-- Which prompt version a call ran, and which experiment arm ('control' or 'variant'), if any.
ALTER TABLE calls ADD COLUMN prompt_version_id TEXT;
ALTER TABLE calls ADD COLUMN variant TEXT;
