-- Cheaper autoanalyze. Autoanalyze visits a growing table about once a minute and samples
-- 300 x its largest column statistics target (30,000 rows at the default 100), sorting each
-- column's sampled values; so its cost per study grew with the tables until they passed 30,000
-- rows (bench/scale_stats.py, light path: autovacuum workers 0 s at 6k studies, ~0.2 ms of
-- Postgres CPU per study at 60k, most of it ANALYZE). Every read here is by key (study_id,
-- cache_key): the planner needs no more than a 3,000-row sample for the key columns, and no
-- statistics at all on the documents, which nothing filters, joins or groups on.
-- Measured on a 33k-row findings table: ANALYZE 0.22 s of CPU, 0.06 s without the documents.
ALTER TABLE findings ALTER COLUMN study_id SET STATISTICS 10,
                     ALTER COLUMN protocol SET STATISTICS 10,
                     ALTER COLUMN extracted_at SET STATISTICS 10,
                     ALTER COLUMN findings SET STATISTICS 0,
                     ALTER COLUMN provenance SET STATISTICS 0,
                     ALTER COLUMN phi_masks SET STATISTICS 0;
ALTER TABLE llm_cache ALTER COLUMN cache_key SET STATISTICS 10,
                      ALTER COLUMN created_at SET STATISTICS 10,
                      ALTER COLUMN response SET STATISTICS 0;
