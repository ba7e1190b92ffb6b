-- Votes carry the reader's judgement as its protocol defines it: the event's tagged `judgement`
-- object, instead of a set of columns per protocol. Rows written before keep their flat columns
-- (verdict, added/removed labels, grades); the repository reads them through the same conversion
-- that upcasts schema-1 vote events (`contracts.legacy_judgement`).
ALTER TABLE votes ADD COLUMN judgement jsonb,
    ALTER COLUMN added_labels SET DEFAULT '[]',
    ALTER COLUMN removed_labels SET DEFAULT '[]';
