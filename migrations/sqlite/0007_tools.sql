-- voxrelay schema, version 7 (SQLite): what a call can do besides talk.
-- Keep in step with migrations/postgres/0007_tools.sql (the SQL is the same on both backends).

-- A business's tools. kind 'function': the model's call comes to the proxy, which validates its
-- arguments against `parameters` (a JSON Schema, as text), POSTs them to `endpoint` signed with
-- the secret in the environment variable `secret_env` (never the secret itself), and waits at
-- most `timeout_ms`. kind 'mcp': a remote MCP server passed through to the Realtime API
-- (`name` is its server_label, `endpoint` its server_url, `allowed_tools` a comma-separated
-- list, empty for all; `secret_env`, when set, names the variable holding its bearer token).
CREATE TABLE business_tools (
    business_id   TEXT    NOT NULL REFERENCES businesses (id),
    name          TEXT    NOT NULL,
    kind          TEXT    NOT NULL DEFAULT 'function' CHECK (kind IN ('function', 'mcp')),
    description   TEXT    NOT NULL DEFAULT '',
    parameters    TEXT    NOT NULL DEFAULT '{"type":"object","properties":{}}',
    endpoint      TEXT    NOT NULL,
    timeout_ms    BIGINT  NOT NULL DEFAULT 3000,
    secret_env    TEXT    NOT NULL DEFAULT '',
    allowed_tools TEXT    NOT NULL DEFAULT '',
    updated_at_ms BIGINT  NOT NULL,
    PRIMARY KEY (business_id, name)
);

-- The built-in call control each business may switch off (1 = on).
ALTER TABLE businesses ADD COLUMN end_call_enabled INTEGER NOT NULL DEFAULT 1 CHECK (end_call_enabled IN (0, 1));
ALTER TABLE businesses ADD COLUMN transfer_enabled INTEGER NOT NULL DEFAULT 1 CHECK (transfer_enabled IN (0, 1));

-- Every tool call a call made. `arguments` is redacted JSON text; `held_ms` is the hold audio
-- the caller heard while it ran (0: none).
CREATE TABLE tool_calls (
    id          TEXT             NOT NULL PRIMARY KEY,
    call_sid    TEXT             NOT NULL,
    business_id TEXT             NOT NULL,
    at_ms       BIGINT           NOT NULL,
    tool        TEXT             NOT NULL,
    status      TEXT             NOT NULL,
    latency_ms  DOUBLE PRECISION NOT NULL,
    held_ms     BIGINT           NOT NULL DEFAULT 0,
    arguments   TEXT             NOT NULL DEFAULT ''
);

CREATE INDEX tool_calls_call ON tool_calls (call_sid, at_ms);
