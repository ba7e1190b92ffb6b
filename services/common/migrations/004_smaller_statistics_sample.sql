-- Cheaper autoanalyze of the outbox and the inbox (every service has both; the outbox keeps a
-- day of events). Autoanalyze visits a growing table about once a minute and samples 300 x its
-- largest column statistics target (30,000 rows at the default 100): its cost per study grew
-- with the tables (bench/scale_stats.py, light path: autovacuum workers 0 s at 6k studies, ~0.2 ms
-- of Postgres CPU per study at 60k, most of it ANALYZE). The inbox is read by key only; the
-- outbox by its partial indexes (the relay's unpublished rows, the gauge's and the prune's
-- published_at): a 3,000-row sample gives the planner what those need (null fractions, ranges),
-- and the message itself (payload, headers, error) needs no statistics.
ALTER TABLE outbox ALTER COLUMN id SET STATISTICS 10,
                   ALTER COLUMN event_id SET STATISTICS 10,
                   ALTER COLUMN topic SET STATISTICS 10,
                   ALTER COLUMN msg_key SET STATISTICS 10,
                   ALTER COLUMN created_at SET STATISTICS 10,
                   ALTER COLUMN published_at SET STATISTICS 10,
                   ALTER COLUMN parked_at SET STATISTICS 10,
                   ALTER COLUMN payload SET STATISTICS 0,
                   ALTER COLUMN headers SET STATISTICS 0,
                   ALTER COLUMN error SET STATISTICS 0;
ALTER TABLE inbox ALTER COLUMN event_id SET STATISTICS 10,
                  ALTER COLUMN topic SET STATISTICS 10,
                  ALTER COLUMN outcome SET STATISTICS 10,
                  ALTER COLUMN received_at SET STATISTICS 10;
