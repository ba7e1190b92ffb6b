"""The metrics loop's two outbox statements read an index, not the whole table (a day of events).

Every service runs them every 5 s (services/common/outbox.py `observe_backlog`, runtime.py's prune
of day-old rows). Read as sequential scans, their cost per study grew with the outbox (the light
path at 1x vs 3x, bench/scale_stats.py); the statements below are theirs, copied.
"""

from __future__ import annotations

import json

import psycopg
import pytest

pytestmark = pytest.mark.integration

BACKLOG = ("SELECT count(*) FILTER (WHERE parked_at IS NULL) AS n,"
           " extract(epoch FROM now() - min(created_at) FILTER (WHERE parked_at IS NULL)) AS age,"
           " count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked"
           " FROM outbox WHERE published_at IS NULL")
PRUNE = "DELETE FROM outbox WHERE published_at < now() - interval '1 day'"


def plan_nodes(conn: psycopg.Connection, sql: str) -> list[dict]:
    (plan,), = conn.execute(f"EXPLAIN (FORMAT JSON) {sql}").fetchall()
    plan = plan if isinstance(plan, list) else json.loads(plan)
    nodes, todo = [], [plan[0]["Plan"]]
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo += node.get("Plans", [])
    return nodes


def test_the_backlog_gauge_and_the_prune_read_the_published_at_index(fresh_schema):
    with psycopg.connect(fresh_schema) as conn:
        # A day's worth of published events (as a run leaves them), a small backlog, one parked row.
        conn.execute("INSERT INTO outbox (event_id, topic, msg_key, payload, published_at)"
                     " SELECT 'e' || i, 't', 'k', '{}', now() - (i % 20) * interval '1 hour'"
                     " FROM generate_series(1, 20000) i")
        conn.execute("INSERT INTO outbox (event_id, topic, msg_key, payload)"
                     " SELECT 'u' || i, 't', 'k', '{}' FROM generate_series(1, 3) i")
        conn.execute("INSERT INTO outbox (event_id, topic, msg_key, payload, parked_at, error)"
                     " VALUES ('p1', 't', 'k', '{}', now(), 'too large')")
        conn.execute("INSERT INTO outbox (event_id, topic, msg_key, payload, published_at)"
                     " VALUES ('old', 't', 'k', '{}', now() - interval '2 days')")
        conn.commit()
        conn.execute("ANALYZE outbox")
        for sql in (BACKLOG, PRUNE):
            nodes = plan_nodes(conn, sql)
            assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], (sql, nodes)
            assert "outbox_published_at" in {n.get("Index Name") for n in nodes}, (sql, nodes)
        row = conn.execute(BACKLOG).fetchone()
        assert (row[0], row[2]) == (3, 1)  # the answers stay what they were
        assert conn.execute(PRUNE).rowcount == 1
        conn.rollback()
