-- The file's PhotometricInterpretation, a study fact: in MONOCHROME1 (common for CR) the lowest
-- value is white, so lung is HIGH in the file's own units and the page's window presets, placed
-- relative to the file's window, must mirror. NULL: ingested before this migration (taken as
-- MONOCHROME2, as before).
ALTER TABLE studies ADD COLUMN photometric_interpretation text;
