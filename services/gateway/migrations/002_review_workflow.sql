-- A read can now expire (lease ran out or a curator moved it): it leaves the worklist, takes no
-- vote, and its reader loses access to the study. The row stays, as the record of who had it.
ALTER TABLE assignments DROP CONSTRAINT assignments_status_check;
ALTER TABLE assignments ADD CONSTRAINT assignments_status_check CHECK (status IN ('open', 'voted', 'expired'));
ALTER TABLE assignments
    ADD COLUMN reason      text NOT NULL DEFAULT '',
    ADD COLUMN expired_at  timestamptz,
    ADD COLUMN replaced_by text;
CREATE INDEX assignments_study ON assignments (study_id);

-- Which omission warnings the reader confirmed when voting (removed positive labels, unmapped findings).
ALTER TABLE votes ADD COLUMN confirmed_omissions jsonb NOT NULL DEFAULT '[]';
CREATE INDEX votes_reader ON votes (reader_id);

-- The semi-collaborative part: a per-study thread, open to a reader once their own vote is in.
CREATE TABLE discussion_posts (
    post_id     bigserial PRIMARY KEY,
    study_id    text NOT NULL,
    author_id   text NOT NULL,
    author_role text NOT NULL,
    body        text NOT NULL,
    posted_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX discussion_posts_study ON discussion_posts (study_id, post_id);

-- Read model of sampling-completed: what a run drew and which quotas the pool could not meet.
ALTER TABLE sampling_runs
    ADD COLUMN status       text NOT NULL DEFAULT 'requested' CHECK (status IN ('requested', 'completed', 'failed')),
    ADD COLUMN pool_size    integer,
    ADD COLUMN n_selected   integer,
    ADD COLUMN unmet_quotas jsonb,
    ADD COLUMN tiers        jsonb,
    ADD COLUMN label_counts jsonb,
    ADD COLUMN seconds      double precision,
    ADD COLUMN error        text,
    ADD COLUMN completed_at timestamptz;
