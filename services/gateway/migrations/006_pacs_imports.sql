-- PACS imports asked for through the API (issue 10): what a curator asked for, and per study what
-- happened (ingested, present, refused with the reason, failed). The studies themselves go in
-- through the same ingest code as every other study.
CREATE TABLE pacs_imports (
    import_id uuid PRIMARY KEY,
    requested_by text NOT NULL,
    dicomweb_url text NOT NULL,
    request jsonb NOT NULL,             -- study_uids, query, scrub, protocol (the reports are not kept here)
    status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed', 'interrupted')),
    found integer,
    counts jsonb NOT NULL DEFAULT '{}',
    results jsonb NOT NULL DEFAULT '[]',
    error text,
    requested_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
