-- Readers a reassignment moved away from a study. A vote by one of them may still arrive (it beat
-- the move at the gateway, which then kept it); it is recorded, and counts once the sampler's
-- undoing review-reoffered gives the study back to that reader (issue 11 §5).
ALTER TABLE assignments ADD COLUMN IF NOT EXISTS former_readers JSONB NOT NULL DEFAULT '[]';
