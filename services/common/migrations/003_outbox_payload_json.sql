-- The payload as `json` (the text as recorded, checked but kept verbatim) instead of `jsonb`: the
-- relay sends it as stored, so Postgres no longer builds a jsonb value from every event on insert
-- and prints it back as text on every read, nor does the relay parse it and encode it again (a
-- chest study's events carry its instance list inline, ~2-8 KiB, at each of three hops). Nothing
-- queries inside a payload with jsonb's operators; `->` and `->>` work on json as well.
ALTER TABLE outbox ALTER COLUMN payload TYPE json USING payload::json;
