-- A row the broker refuses for good (too large, topic forbidden) is parked with its error instead
-- of blocking every row after it; an operator looks at it, the relay never retries it.
ALTER TABLE outbox ADD COLUMN parked_at timestamptz;
ALTER TABLE outbox ADD COLUMN error text;
-- Kafka record headers (a replayed dead letter carries its replay id there).
ALTER TABLE outbox ADD COLUMN headers jsonb;
DROP INDEX outbox_unpublished;
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL AND parked_at IS NULL;
CREATE INDEX outbox_parked ON outbox (id) WHERE parked_at IS NOT NULL;

-- Every dead-letter replay, who asked for it and why: the audit trail of re-driven events.
CREATE TABLE dead_letter_replays (
    replay_id         text PRIMARY KEY,
    letter_id         text NOT NULL,
    original_event_id text NOT NULL,
    original_topic    text NOT NULL,
    requested_by      text NOT NULL,
    reason            text NOT NULL DEFAULT '',
    replayed_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letter_replays_letter ON dead_letter_replays (letter_id);
