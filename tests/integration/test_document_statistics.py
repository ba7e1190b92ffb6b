"""Autoanalyze gathers no statistics on the columns that only carry documents (the outbox's and
the inbox's messages, the sampler's stored suggestion, the extractor's findings, the mapper's
suggestions, both LLM caches), and a 3,000-row sample for the rest: every read of these tables
is by key or by a partial index, and ANALYZE's 30,000-row sample sorted per column, about once a
minute per growing table, was a cost per study that grew with the tables (bench/scale_stats.py).
The key columns keep their statistics: the planner still sees them."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.conftest import new_schema

pytestmark = pytest.mark.integration

ROWS = 4000
CACHE = ("INSERT INTO llm_cache (cache_key, response) SELECT 'k' || i, jsonb_build_object('r', i % 5)"
         f" FROM generate_series(1, {ROWS}) i")
COMMON = [
    "INSERT INTO outbox (event_id, topic, msg_key, payload, headers, published_at, error)"
    " SELECT 'e' || i, 't' || i % 3, 'k' || i % 50, json_build_object('n', i), jsonb_build_object('h', i % 2),"
    f" CASE WHEN i % 10 > 0 THEN now() END, CASE WHEN i % 97 = 0 THEN 'refused' END FROM generate_series(1, {ROWS}) i",
    "INSERT INTO inbox (event_id, topic, outcome) SELECT 'e' || i, 't' || i % 3, 'applied'"
    f" FROM generate_series(1, {ROWS}) i",
]
FILL = {
    "sampler": ["INSERT INTO candidates (study_id, patient_id, protocol, taxonomy_version, suggestion)"
                " SELECT 's' || i, 'p' || i % 900, 'cxr', 'v1', jsonb_build_object('labels', jsonb_build_array(i % 9))"
                f" FROM generate_series(1, {ROWS}) i"],
    "extractor": ["INSERT INTO findings (study_id, protocol, findings, provenance, phi_masks)"
                  " SELECT 's' || i, 'cxr', jsonb_build_object('f', i % 7), jsonb_build_object('backend', 'rules'),"
                  " jsonb_build_array(jsonb_build_object('rule', 'date', 'start', i % 50))"
                  f" FROM generate_series(1, {ROWS}) i", CACHE],
    "mapper": ["INSERT INTO suggestions (study_id, taxonomy_version, protocol, labels, unmapped, extraction, mapping,"
               " reasoning) SELECT 's' || i, 'v1', 'cxr', jsonb_build_array('l' || i % 9), '[]'::jsonb,"
               " jsonb_build_object('e', i % 3), jsonb_build_object('m', i % 4), 'because ' || i % 11"
               f" FROM generate_series(1, {ROWS}) i", CACHE],
    "gateway": ["INSERT INTO studies (study_id, patient_id, protocol, study_instance_uid, report_text, correlation_id)"
                " SELECT 's' || i, 'p' || i % 900, 'cxr', '1.2.' || i, 'FINDINGS: ' || repeat(md5(i::text), 8), 'c'"
                f" FROM generate_series(1, {ROWS}) i",
                "INSERT INTO suggestions (study_id, taxonomy_version, labels, unmapped, extraction, mapping)"
                " SELECT 's' || i, 'v1', jsonb_build_array('l' || i % 9), '[]'::jsonb, jsonb_build_object('e', i % 3),"
                f" jsonb_build_object('m', i % 4) FROM generate_series(1, {ROWS}) i"],
}
COMMON_TABLES = {"outbox": ({"payload", "headers", "error"}, {"id", "event_id", "topic", "published_at"}),
                 "inbox": (set(), {"event_id", "topic", "outcome"})}
TABLES = {  # per table: (the documents: no statistics, the keys: statistics kept)
    "sampler": {"candidates": ({"suggestion"}, {"study_id", "patient_id", "protocol"})},
    "extractor": {"findings": ({"findings", "provenance", "phi_masks"}, {"study_id", "protocol"}),
                  "llm_cache": ({"response"}, {"cache_key"})},
    "mapper": {"suggestions": ({"labels", "unmapped", "extraction", "mapping", "reasoning"},
                               {"study_id", "taxonomy_version", "protocol"}),
               "llm_cache": ({"response"}, {"cache_key"})},
    # The gateway's look-up columns keep the default target (its contamination checks plan on
    # them): only the documents lose their statistics.
    "gateway": {"studies": ({"report_text"}, {"study_id", "patient_id", "protocol", "study_instance_uid"}),
                "suggestions": ({"labels", "unmapped", "extraction", "mapping"}, {"study_id", "taxonomy_version"})},
}
SMALL_SAMPLE = {"sampler", "extractor", "mapper"}  # and the outbox and inbox of every service


@pytest.mark.parametrize("service", ["sampler", "extractor", "mapper", "gateway"])
def test_analyze_skips_the_documents_and_keeps_the_keys(infra: dict[str, Any], service: str) -> None:
    dsn = new_schema(infra["postgres"]["admin_dsn"], service)
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT current_schema()").fetchone()
        assert row is not None
        schema = row[0]
        for sql in COMMON + FILL[service]:
            conn.execute(sql)
        for table, (documents, keys) in (TABLES[service] | COMMON_TABLES).items():
            conn.execute(f"ANALYZE {table}")
            got = {r[0] for r in conn.execute(
                "SELECT attname FROM pg_stats WHERE schemaname = %s AND tablename = %s", (schema, table))}
            assert not got & documents, (table, got)
            assert keys <= got, (table, got)
            if table not in COMMON_TABLES and service not in SMALL_SAMPLE:
                continue
            # ... from the smaller sample: a statistics target of 10 keeps at most 11 histogram
            # bounds (the default 100 keeps 101; these keys are all distinct, so all have one).
            bounds = conn.execute(
                "SELECT attname, array_length(histogram_bounds::text::text[], 1) FROM pg_stats"
                " WHERE schemaname = %s AND tablename = %s AND histogram_bounds IS NOT NULL",
                (schema, table)).fetchall()
            assert bounds and max(n for _, n in bounds) <= 11, (table, bounds)
