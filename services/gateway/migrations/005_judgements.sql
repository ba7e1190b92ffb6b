-- Votes store the reader's judgement as its protocol defines it (the vote event's tagged
-- `judgement`), not a set of columns per protocol. Older rows keep their flat columns, which the
-- routes read as the judgement's fields when `judgement` is null.
ALTER TABLE votes ADD COLUMN judgement jsonb,
    ALTER COLUMN added_labels SET DEFAULT '[]',
    ALTER COLUMN removed_labels SET DEFAULT '[]';
