-- A flag is resolved by a curator's adjudication; it stays in the table as part of the audit trail.
ALTER TABLE flags ADD COLUMN resolved_at timestamptz, ADD COLUMN resolved_by text;

-- Curator adjudications: appended, never updated. The rule's decision in `decisions` is kept as
-- it was; the latest adjudication of a study (highest seq) is the study's effective decision.
CREATE TABLE adjudications (
    seq               bigserial UNIQUE,
    adjudication_id   text PRIMARY KEY,
    study_id          text NOT NULL REFERENCES decisions (study_id),
    curator_id        text NOT NULL,
    accepted          boolean NOT NULL,
    labels            jsonb NOT NULL,
    note              text NOT NULL DEFAULT '',
    previous_accepted boolean NOT NULL,
    previous_labels   jsonb NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX adjudications_study ON adjudications (study_id, seq);

-- What selection, funnel counts and reports use: the rule's decision unless a curator adjudicated.
CREATE VIEW effective_decisions AS
SELECT d.study_id,
       coalesce(a.accepted, d.accepted) AS accepted,
       coalesce(a.labels, d.labels)     AS labels,
       d.needs_adjudication,
       a.adjudication_id IS NOT NULL    AS adjudicated
FROM decisions d
LEFT JOIN LATERAL (
    SELECT x.adjudication_id, x.accepted, x.labels FROM adjudications x
    WHERE x.study_id = d.study_id ORDER BY x.seq DESC LIMIT 1
) a ON true;

-- Holdout evaluations: aggregate results only (no per-study output is ever stored or sent).
CREATE TABLE evaluations (
    evaluation_id     text PRIMARY KEY,
    evaluator_id      text NOT NULL,
    release_id        text NOT NULL,
    submission_sha256 text NOT NULL,
    status            text NOT NULL CHECK (status IN ('scored', 'rejected')),
    receipt           text NOT NULL DEFAULT '',
    metric_version    text NOT NULL DEFAULT '',
    result            jsonb,
    error             text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now()
);
