-- Taxonomy labels suggested for each study, per taxonomy version, with the mapping's provenance.
CREATE TABLE suggestions (
    study_id         text NOT NULL,
    taxonomy_version text NOT NULL,
    protocol         text NOT NULL,
    labels           jsonb NOT NULL,
    unmapped         jsonb NOT NULL,
    extraction       jsonb NOT NULL,
    mapping          jsonb NOT NULL,
    reasoning        text,           -- an LLM's reasoning, kept for audit apart from the answer
    suggested_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (study_id, taxonomy_version)
);

CREATE TABLE llm_cache (
    cache_key  text PRIMARY KEY,
    response   jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
