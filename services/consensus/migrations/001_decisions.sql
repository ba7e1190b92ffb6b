-- What each study was assigned for review (from review-assigned).
CREATE TABLE assignments (
    study_id         text PRIMARY KEY,
    patient_id       text NOT NULL,
    protocol         text NOT NULL,
    run_id           text NOT NULL,
    readers          jsonb NOT NULL,
    suggested        jsonb NOT NULL,   -- label ids
    difficulty       text NOT NULL,
    taxonomy_version text NOT NULL,
    extraction       jsonb NOT NULL,
    mapping          jsonb NOT NULL,
    objects          jsonb NOT NULL
);

-- Every vote received, including late ones and re-votes (which never change a decision).
CREATE TABLE votes (
    vote_id        text PRIMARY KEY,
    study_id       text NOT NULL,
    reader_id      text NOT NULL,
    verdict        text NOT NULL,
    added_labels   jsonb NOT NULL,
    removed_labels jsonb NOT NULL,
    seconds_spent  double precision,
    cast_at        timestamptz NOT NULL,
    counted        boolean NOT NULL      -- false: arrived after the decision, or a re-vote
);
CREATE INDEX votes_study ON votes (study_id);

CREATE TABLE decisions (
    study_id           text PRIMARY KEY,
    accepted           boolean NOT NULL,
    labels             jsonb NOT NULL,
    rule               text NOT NULL,
    rule_version       text NOT NULL,
    needs_adjudication boolean NOT NULL,
    reason             text NOT NULL,
    vote_ids           jsonb NOT NULL,
    decided_at         timestamptz NOT NULL DEFAULT now()
);

-- Studies a curator must look at (late votes, re-votes, adjudication).
CREATE TABLE flags (
    id         bigserial PRIMARY KEY,
    study_id   text NOT NULL,
    reason     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE releases (
    release_id      text PRIMARY KEY,
    protocol        text NOT NULL,
    plan            jsonb NOT NULL,
    released        jsonb NOT NULL,
    holdout         jsonb NOT NULL,
    manifest_key    text NOT NULL,
    manifest_sha256 text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Holdout ground truth never leaves this schema (nor the holdout bucket).
CREATE TABLE holdout_truth (
    release_id text NOT NULL REFERENCES releases (release_id),
    study_id   text NOT NULL,
    labels     jsonb NOT NULL,
    PRIMARY KEY (release_id, study_id)
);
