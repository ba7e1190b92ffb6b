-- Every (study, reader) pair the sampler ever made, with its lease. A row is never deleted: a
-- reader who once had a study (even one whose lease expired) must never be offered it again,
-- because they have seen its suggested labels and would no longer read it blind.
CREATE TABLE leases (
    study_id    text NOT NULL REFERENCES sampled (study_id),
    reader_id   text NOT NULL,
    run_id      text NOT NULL,
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'voted', 'expired', 'cancelled')),
    assigned_at timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz NOT NULL,
    replaced_by text,
    PRIMARY KEY (study_id, reader_id)
);
CREATE INDEX leases_due ON leases (lease_until) WHERE status = 'open';

-- What a reoffer needs to respect, kept with the run that set it.
ALTER TABLE sampling_runs
    ADD COLUMN capacity     jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN exclusions   jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN label_counts jsonb NOT NULL DEFAULT '{}';
