-- voxrelay schema, version 11 (SQLite): every guard decision on a caller turn is a row.
-- Keep in step with migrations/postgres/0011_guard_decisions.sql (the SQL is the same on both backends).

-- The sanitizer's verdict (allow, flag, block) and the stage that decided it (none, rules,
-- classifier, both, combined, context) of an injection decision; NULL for the other kinds
-- (echo, self-echo, leak) and for rows written before version 11. Allowed turns and gate
-- releases are recorded too, as compact rows: verdict, score and stage, no text.
ALTER TABLE call_events ADD COLUMN verdict TEXT;
ALTER TABLE call_events ADD COLUMN stage TEXT;
