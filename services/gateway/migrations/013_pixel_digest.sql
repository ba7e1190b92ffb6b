-- The same image re-exported with new UIDs or in another transfer syntax has another file
-- sha256: ingest keeps a digest of each object's decoded pixels (services.gateway.pixel_digest;
-- NULL for a uniform image, or a compressed one not decoded at ingest) and refuses a study that
-- holds another study's image; the index makes that check a lookup.
ALTER TABLE study_objects ADD COLUMN IF NOT EXISTS pixel_sha256 text;
CREATE INDEX IF NOT EXISTS study_objects_pixel_sha256 ON study_objects (pixel_sha256)
    WHERE pixel_sha256 IS NOT NULL;
