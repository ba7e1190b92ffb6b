-- People and their credentials. Tokens are random 32-byte secrets; only their sha256 is stored.
CREATE TABLE users (
    user_id      text PRIMARY KEY,
    display_name text NOT NULL DEFAULT '',
    role         text NOT NULL CHECK (role IN ('reviewer', 'curator', 'admin', 'evaluator')),
    token_sha256 text NOT NULL UNIQUE,
    active       boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Studies the gateway ingested (it owns studies, their report text and their objects in S3).
CREATE TABLE studies (
    study_id           text PRIMARY KEY,
    patient_id         text NOT NULL,
    protocol           text NOT NULL,
    study_instance_uid text NOT NULL,
    report_text        text NOT NULL,
    correlation_id     text NOT NULL,
    ingested_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE study_objects (
    study_id            text NOT NULL REFERENCES studies (study_id),
    sop_instance_uid    text NOT NULL,
    series_instance_uid text NOT NULL,
    series_description  text NOT NULL,
    instance_number     integer NOT NULL,
    modality            text NOT NULL,
    object_key          text NOT NULL,
    sha256              text NOT NULL,
    PRIMARY KEY (study_id, sop_instance_uid)
);

-- Read model: suggestions (labels-suggested).
CREATE TABLE suggestions (
    study_id         text PRIMARY KEY,
    taxonomy_version text NOT NULL,
    labels           jsonb NOT NULL,
    unmapped         jsonb NOT NULL,
    extraction       jsonb NOT NULL,
    mapping          jsonb NOT NULL
);

-- Read model: who reads what (review-assigned). One row per (study, reader).
CREATE TABLE assignments (
    assignment_id text PRIMARY KEY,
    study_id      text NOT NULL,
    reader_id     text NOT NULL,
    run_id        text NOT NULL,
    difficulty    text NOT NULL,
    suggested     jsonb NOT NULL,
    unmapped      jsonb NOT NULL,
    status        text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'voted')),
    assigned_at   timestamptz NOT NULL DEFAULT now(),
    opened_at     timestamptz,
    UNIQUE (study_id, reader_id)
);
CREATE INDEX assignments_reader_open ON assignments (reader_id, assigned_at, study_id) WHERE status = 'open';

-- Votes: owned here, published as vote-cast through the outbox.
CREATE TABLE votes (
    vote_id         text PRIMARY KEY,
    assignment_id   text NOT NULL UNIQUE REFERENCES assignments (assignment_id),
    study_id        text NOT NULL,
    reader_id       text NOT NULL,
    verdict         text NOT NULL,
    added_labels    jsonb NOT NULL,
    removed_labels  jsonb NOT NULL,
    comment         text NOT NULL DEFAULT '',
    seconds_spent   double precision,
    idempotency_key text,
    cast_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX votes_study ON votes (study_id);

-- Read model: decisions (consensus-reached) and releases (benchmark-released).
CREATE TABLE decisions (
    study_id   text PRIMARY KEY,
    accepted   boolean NOT NULL,
    labels     jsonb NOT NULL,
    rule       text NOT NULL,
    vote_ids   jsonb NOT NULL,
    decided_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE releases (
    release_id      text PRIMARY KEY,
    protocol        text NOT NULL,
    status          text NOT NULL CHECK (status IN ('requested', 'released')),
    released_count  integer,
    holdout_count   integer,
    manifest_key    text,
    manifest_sha256 text,
    requested_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sampling_runs (
    run_id       text PRIMARY KEY,
    plan         jsonb NOT NULL,
    panel        jsonb NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now()
);
