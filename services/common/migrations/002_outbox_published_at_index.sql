-- Every service's metrics loop asks every 5 s for its outbox backlog (`WHERE published_at IS NULL`:
-- count, oldest, parked) and prunes rows published over a day ago (`published_at < now() - 1 day`).
-- Neither predicate had an index, so both read the whole outbox, which keeps a day of events:
-- their cost per study grew with the table (1x -> 3x light path, bench/scale_stats.py). One index
-- answers both; the INCLUDEd columns let the backlog gauge read only the index and the unpublished
-- rows' heap tuples.
CREATE INDEX IF NOT EXISTS outbox_published_at ON outbox (published_at) INCLUDE (parked_at, created_at);
