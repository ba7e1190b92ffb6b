-- Cheaper autoanalyze: as extractor's 003_no_statistics_on_documents.sql (why, and the figures).
-- The pool is read by key (study_id = ANY) or whole (the draw's anti-join on sampled, filtered
-- by protocol, a handful of values): a 3,000-row sample describes it, and the suggestion
-- document needs no statistics.
ALTER TABLE candidates ALTER COLUMN study_id SET STATISTICS 10,
                       ALTER COLUMN patient_id SET STATISTICS 10,
                       ALTER COLUMN protocol SET STATISTICS 10,
                       ALTER COLUMN taxonomy_version SET STATISTICS 10,
                       ALTER COLUMN added_at SET STATISTICS 10,
                       ALTER COLUMN suggestion SET STATISTICS 0;
