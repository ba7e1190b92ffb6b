-- Cheaper autoanalyze (as common/004 and the extractor's, mapper's and sampler's migrations of the
-- same name): no planner statistics on the columns that only carry documents. Nothing filters,
-- joins or groups on a study's report or on the suggestion read model's documents (reads are by
-- study_id), yet every autoanalyze (about once a minute per growing table) sorted 30,000 sampled
-- values of each, the report with text's collation. The look-up columns keep the default target:
-- the ingest's contamination checks (holders_of) plan on their statistics.
ALTER TABLE studies ALTER COLUMN report_text SET STATISTICS 0;
ALTER TABLE suggestions ALTER COLUMN labels SET STATISTICS 0,
                        ALTER COLUMN unmapped SET STATISTICS 0,
                        ALTER COLUMN extraction SET STATISTICS 0,
                        ALTER COLUMN mapping SET STATISTICS 0;
