-- What the extractor read from each report, with the backend that read it.
CREATE TABLE findings (
    study_id     text PRIMARY KEY,
    protocol     text NOT NULL,
    findings     jsonb NOT NULL,
    provenance   jsonb NOT NULL,
    extracted_at timestamptz NOT NULL DEFAULT now()
);

-- LLM responses keyed by (backend, model, prompt version, input hash): re-runs cost nothing.
CREATE TABLE llm_cache (
    cache_key  text PRIMARY KEY,
    response   jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
