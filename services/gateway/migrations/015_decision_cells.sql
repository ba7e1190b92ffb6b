-- A grid protocol's decided cells (grade, method, `adjudicate` flag, point) on the gateway's copy
-- of each decision, from consensus-reached and then from study-adjudicated: the curator console
-- shows which cells the rule held and the grades a ruling set. NULL for a protocol without cells
-- and for decisions recorded before this column (the console then marks held cells itself).
ALTER TABLE decisions ADD COLUMN IF NOT EXISTS cells jsonb;
