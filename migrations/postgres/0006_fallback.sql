-- voxrelay schema, version 6 (PostgreSQL): where each business's calls go when no model can take them.
-- Keep in step with migrations/sqlite/0006_fallback.sql (the SQL is the same on both backends).

-- 'apology' (a spoken apology and a hang-up), an E.164 number to put the caller through to, or
-- NULL: the instance's fallback.number (the apology when that is empty).
ALTER TABLE businesses ADD COLUMN fallback TEXT;
