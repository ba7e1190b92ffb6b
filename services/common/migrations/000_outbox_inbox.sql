-- Transactional outbox: a service records the events it will publish in the same transaction
-- as the state change that caused them; the relay publishes and marks them.
CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    event_id     text NOT NULL UNIQUE,
    topic        text NOT NULL,
    msg_key      text NOT NULL,
    payload      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- Inbox: every event a consumer has applied (or dead-lettered), recorded in the same transaction
-- as its effect, so a redelivered event is recognised and skipped.
CREATE TABLE inbox (
    event_id    text PRIMARY KEY,
    topic       text NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('applied', 'dead_lettered')),
    received_at timestamptz NOT NULL DEFAULT now()
);
