-- The lumbar grading protocol (issue 6): votes with a grade (and point) per cell instead of a
-- verdict, and per-cell decisions. Holdout truth rows of a lumbar release are
-- {"<condition>_<level>": grade} objects in the existing `labels` column.
ALTER TABLE votes ALTER COLUMN verdict DROP NOT NULL, ADD COLUMN grades jsonb;
ALTER TABLE decisions ADD COLUMN cells jsonb;
