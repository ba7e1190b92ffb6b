-- Each study's instance manifest key (services.common.manifests), recorded in the ingest
-- transaction: the manifests that events can reference are exactly these, so a manifest under
-- `manifests/` that no study records (its ingest's transaction failed) can be collected
-- (services.gateway.manifest_gc). Studies ingested before this column have NULL: their
-- manifests are never collected.
ALTER TABLE studies ADD COLUMN IF NOT EXISTS objects_manifest_key text;
CREATE INDEX IF NOT EXISTS studies_objects_manifest_key ON studies (objects_manifest_key)
    WHERE objects_manifest_key IS NOT NULL;
