-- Holdout evaluations: the submission is kept only as its hash; the result is aggregates only.
CREATE TABLE evaluations (
    evaluation_id     text PRIMARY KEY,
    evaluator_id      text NOT NULL,
    release_id        text NOT NULL,
    submission_sha256 text NOT NULL,
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'scored', 'rejected')),
    result            jsonb,
    error             text NOT NULL DEFAULT '',
    receipt           text NOT NULL DEFAULT '',
    metric_version    text NOT NULL DEFAULT '',
    submitted_at      timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz
);
CREATE INDEX evaluations_by_evaluator ON evaluations (evaluator_id, submitted_at);

-- Agreement reports asked of consensus (report-requested → report-ready).
CREATE TABLE reports (
    report_id    text PRIMARY KEY,
    kind         text NOT NULL,
    protocol     text NOT NULL,
    requested_by text NOT NULL,
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'ready')),
    body         jsonb,
    requested_at timestamptz NOT NULL DEFAULT now(),
    ready_at     timestamptz
);

-- Adjudications a curator asked for; `applied_at` is set when consensus recorded it.
CREATE TABLE adjudications (
    adjudication_id text PRIMARY KEY,
    study_id        text NOT NULL,
    curator_id      text NOT NULL,
    accepted        boolean NOT NULL,
    labels          jsonb NOT NULL,
    note            text NOT NULL DEFAULT '',
    requested_at    timestamptz NOT NULL DEFAULT now(),
    applied_at      timestamptz
);
