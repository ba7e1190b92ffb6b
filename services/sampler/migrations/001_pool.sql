-- The candidate pool: every study with AI-suggested labels, waiting to be sampled.
CREATE TABLE candidates (
    study_id         text PRIMARY KEY,
    patient_id       text NOT NULL,
    protocol         text NOT NULL,
    taxonomy_version text NOT NULL,
    suggestion       jsonb NOT NULL,   -- the LabelsSuggested event as received
    added_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sampling_runs (
    run_id       text PRIMARY KEY,
    protocol     text NOT NULL,
    plan         jsonb NOT NULL,
    panel        jsonb NOT NULL,
    pool_size    integer NOT NULL,
    n_selected   integer NOT NULL,
    unmet_quotas jsonb NOT NULL,
    tiers        jsonb NOT NULL,
    seconds      double precision NOT NULL,
    completed_at timestamptz NOT NULL DEFAULT now()
);

-- Why each study was chosen, and who reads it. A study is sampled at most once.
CREATE TABLE sampled (
    study_id   text PRIMARY KEY REFERENCES candidates (study_id),
    run_id     text NOT NULL REFERENCES sampling_runs (run_id),
    stratum    text NOT NULL,
    quota      text NOT NULL,
    difficulty text NOT NULL,
    reason     text NOT NULL,
    readers    jsonb NOT NULL
);
CREATE INDEX sampled_run ON sampled (run_id);

-- Sampling requests waiting for the pool to reach their min_pool_size.
CREATE TABLE pending_runs (
    run_id       text PRIMARY KEY,
    command      jsonb NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now()
);
