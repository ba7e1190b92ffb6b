-- No holdout labels out (issue 11 §10, §12).
-- Evaluators belong to a team; quotas, budgets and the ladder are the team's, so minting or
-- re-creating accounts buys no extra probes. Accounts from before teams are each their own team.
ALTER TABLE users ADD COLUMN team text;
UPDATE users SET team = user_id WHERE role = 'evaluator' AND team IS NULL;

-- The release records the policy that decides what a submission's answer shows.
ALTER TABLE releases ADD COLUMN evaluation_policy jsonb;

-- `result` is the full aggregate from consensus and never leaves the gateway except for the
-- team's one final evaluation; `published` is what the policy lets the team see.
ALTER TABLE evaluations ADD COLUMN team text;
UPDATE evaluations SET team = evaluator_id WHERE team IS NULL;
ALTER TABLE evaluations ALTER COLUMN team SET NOT NULL;
ALTER TABLE evaluations ADD COLUMN final boolean NOT NULL DEFAULT false;
ALTER TABLE evaluations ADD COLUMN published jsonb;
CREATE INDEX evaluations_by_team ON evaluations (team, release_id, submitted_at);
CREATE UNIQUE INDEX evaluations_one_final ON evaluations (team, release_id) WHERE final;

-- Studies held out by a release: once released, readers no longer see them (§12).
CREATE TABLE holdout_studies (
    study_id   text PRIMARY KEY,
    release_id text NOT NULL
);
