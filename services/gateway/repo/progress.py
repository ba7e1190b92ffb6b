"""Where the curation stands: the funnel per protocol, each reader's reads, each sampled study's
state, and the votes for export."""

from __future__ import annotations

from typing import Any

from services.gateway import judgements
from services.gateway.repo.conn import Conn, Row

_STUDY_STATES = """
SELECT a.study_id, min(a.run_id) AS run_id, min(a.difficulty) AS difficulty, min(a.reason) AS reason,
       jsonb_agg(jsonb_build_object('reader_id', a.reader_id, 'status', a.status, 'assignment_id', a.assignment_id)
                 ORDER BY a.reader_id) AS readers,
       count(*) FILTER (WHERE a.status = 'voted') AS votes,
       count(*) FILTER (WHERE a.status <> 'expired') AS readers_needed,
       CASE WHEN bool_or(d.accepted) THEN 'accepted'
            WHEN bool_or(d.accepted IS NOT NULL) THEN 'not_accepted'
            WHEN count(*) FILTER (WHERE a.status = 'open') = 0 THEN 'voted'
            WHEN count(*) FILTER (WHERE a.status = 'voted') > 0 THEN 'in_review'
            ELSE 'assigned' END AS state
FROM assignments a LEFT JOIN decisions d USING (study_id)
GROUP BY a.study_id
"""


async def ingested(conn: Conn, protocol: str) -> int:
    """How many studies of the protocol are in."""
    cur = await conn.execute("SELECT count(*) AS n FROM studies WHERE protocol = %s", (protocol,))
    row = await cur.fetchone()
    assert row is not None  # an aggregate without GROUP BY always returns one row
    return int(row["n"])


async def sampled(conn: Conn, protocol: str) -> int:
    """How many of the protocol's studies have been sampled (have any read)."""
    cur = await conn.execute(
        "SELECT count(DISTINCT study_id) AS n FROM assignments a JOIN studies s USING (study_id)"
        " WHERE s.protocol = %s", (protocol,))
    row = await cur.fetchone()
    assert row is not None  # an aggregate without GROUP BY always returns one row
    return int(row["n"])


# The funnel's counts. The studies of the protocol are read once, with their suggestion and
# decision (one of each at most: both keyed by study_id), where joining each table to studies on
# its own read studies five times; the sampled studies are counted from a hashed DISTINCT
# (count(DISTINCT) sorts: ~5 against ~2 ms at 9,000 assignments). Postgres CPU per call at
# 3,000 / 30,000 studies: 1.9 / 18-19 ms against 2.8 / 27-30 (bench_progress's archive, pairs).
# Still O(studies): the same counts as the joins (test_progress_funnel.py), no cost to the writers.
_FUNNEL = (
    "SELECT f.ingested, f.suggested,"
    " (SELECT count(*) FROM (SELECT DISTINCT study_id FROM assignments WHERE protocol = %(p)s) a) AS sampled,"
    " (SELECT count(*) FROM assignments WHERE status <> 'expired' AND protocol = %(p)s) AS assignments,"
    " (SELECT count(*) FROM votes v JOIN studies s USING (study_id) WHERE s.protocol = %(p)s) AS votes,"
    " f.decided, f.accepted"
    " FROM (SELECT count(*) AS ingested, count(g.study_id) AS suggested, count(d.study_id) AS decided,"
    " count(*) FILTER (WHERE d.accepted) AS accepted FROM studies s LEFT JOIN suggestions g USING (study_id)"
    " LEFT JOIN decisions d USING (study_id) WHERE s.protocol = %(p)s) f")


async def funnel(conn: Conn, protocol: str) -> dict[str, Any]:
    """The protocol's counts: ingested, suggested, sampled, assignments, votes, decided, accepted."""
    cur = await conn.execute(_FUNNEL, {"p": protocol})
    row = await cur.fetchone()
    assert row is not None  # an aggregate without GROUP BY always returns one row
    return dict(row)


async def readers(conn: Conn, protocol: str) -> list[Row]:
    """Per reader of the protocol's studies: assigned, open, done and expired reads, and the
    median, mean and total `seconds_spent` of their votes; by reader id."""
    cur = await conn.execute(
        "SELECT a.reader_id, count(*) FILTER (WHERE a.status <> 'expired') AS assigned,"
        " count(*) FILTER (WHERE a.status = 'open') AS open, count(v.vote_id) AS done,"
        " count(*) FILTER (WHERE a.status = 'expired') AS expired,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY v.seconds_spent) AS median_seconds,"
        " avg(v.seconds_spent) AS mean_seconds, sum(v.seconds_spent) AS total_seconds"
        " FROM assignments a LEFT JOIN votes v USING (assignment_id) WHERE a.protocol = %s"
        " GROUP BY a.reader_id ORDER BY a.reader_id", (protocol,))
    return await cur.fetchall()


async def study_states(conn: Conn, state: str | None, limit: int, offset: int) -> list[Row]:
    """Per sampled study (by study id, a page of them): its state, readers and why it was sampled."""
    cur = await conn.execute(
        f"SELECT * FROM ({_STUDY_STATES}) s WHERE %(state)s::text IS NULL OR s.state = %(state)s"
        " ORDER BY s.study_id LIMIT %(limit)s OFFSET %(offset)s",
        {"state": state, "limit": limit, "offset": offset})
    return await cur.fetchall()


async def all_votes(conn: Conn) -> list[Row]:
    """Every vote in casting order, with the judgement's storage columns (read them with
    `judgements.judgement_fields`)."""
    cur = await conn.execute(
        f"SELECT v.vote_id, v.study_id, v.reader_id, v.comment, v.seconds_spent, v.cast_at, {judgements.SELECT}"
        " FROM votes v ORDER BY v.cast_at, v.vote_id")
    return await cur.fetchall()
