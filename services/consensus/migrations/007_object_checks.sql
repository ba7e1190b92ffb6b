-- Each accepted study's DICOM objects are checked against the de-identification profile when the
-- study is decided (release_ahead.py), so that a release reuses the result instead of reading and
-- parsing every object on its critical path. A row is reused only for the same profile version and
-- the same sha256 (of the bytes that were read), and the copy is made on its ETag (If-Match): an
-- object rewritten since is read and checked again at the release, as before.
CREATE TABLE IF NOT EXISTS object_checks (
    object_key      text NOT NULL,
    profile_version text NOT NULL,
    sha256          text NOT NULL,   -- of the bytes read and checked
    etag            text NOT NULL,   -- the store's ETag of those bytes (copies are made on it: If-Match)
    violations      jsonb NOT NULL,  -- deid.violations(); [] conforms
    checked_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (object_key, profile_version)
);
