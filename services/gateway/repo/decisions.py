"""Decisions (from consensus-reached) and the curator's adjudications of them."""

from __future__ import annotations

import json
from collections.abc import Sequence

from services.common.contracts import CellConsensus, ConsensusReached, StudyAdjudicated
from services.gateway.repo.conn import Conn, Row


def _cells_json(cells: Sequence[CellConsensus]) -> str | None:
    """A grid protocol's cells as stored; None (SQL NULL) for a protocol without cells."""
    return json.dumps([c.model_dump(mode="json") for c in cells]) if cells else None


async def save(conn: Conn, e: ConsensusReached) -> None:
    """The rule's decision; the first one kept."""
    await save_many(conn, [e])


async def save_many(conn: Conn, events: Sequence[ConsensusReached]) -> None:
    """`save` for a batch of decisions of different studies, in one statement. The arrays travel in
    binary: a text-format array is escaped element by element in Python, every quote of each JSON value."""
    await conn.execute(
        "INSERT INTO decisions (study_id, accepted, labels, rule, vote_ids, cells)"
        " SELECT study_id, accepted, labels::jsonb, rule, vote_ids::jsonb, cells::jsonb"
        " FROM unnest(%b::text[], %b::bool[], %b::text[], %b::text[], %b::text[], %b::text[]) WITH ORDINALITY"
        " AS d(study_id, accepted, labels, rule, vote_ids, cells, n) ORDER BY n ON CONFLICT (study_id) DO NOTHING",
        ([e.study_id for e in events], [e.accepted for e in events], [json.dumps(e.labels) for e in events],
         [e.rule for e in events], [json.dumps(e.vote_ids) for e in events], [_cells_json(e.cells) for e in events]))


async def decided(conn: Conn, study_id: str) -> Row | None:
    """A decided study's study_id and protocol (None when it has no assignment); None when undecided."""
    cur = await conn.execute("SELECT d.study_id, (SELECT protocol FROM assignments a WHERE a.study_id = d.study_id"
                             " LIMIT 1) AS protocol FROM decisions d WHERE d.study_id = %s", (study_id,))
    return await cur.fetchone()


async def get(conn: Conn, study_id: str) -> Row | None:
    """A study's decision as the curator sees it: accepted, labels, rule, cells (a grid protocol's,
    else None) and the protocol of its reads; None when undecided."""
    cur = await conn.execute(
        "SELECT d.study_id, d.accepted, d.labels, d.rule, d.cells, d.decided_at,"
        " (SELECT protocol FROM assignments a WHERE a.study_id = d.study_id LIMIT 1) AS protocol"
        " FROM decisions d WHERE d.study_id = %s", (study_id,))
    return await cur.fetchone()


async def insert_adjudication(conn: Conn, adjudication_id: str, study_id: str, curator_id: str, accepted: bool,
                              labels: list[str], note: str) -> None:
    await conn.execute(
        "INSERT INTO adjudications (adjudication_id, study_id, curator_id, accepted, labels, note)"
        " VALUES (%s,%s,%s,%s,%s,%s)",
        (adjudication_id, study_id, curator_id, accepted, json.dumps(labels), note))


async def apply_adjudication(conn: Conn, e: StudyAdjudicated) -> None:
    """The decision follows the curator's ruling, and the adjudication is marked applied."""
    # A grid protocol's cells become the ruling's (the rule's held cells the curator set are
    # `adjudicated`); a ruling without cells leaves the rule's as they were.
    await conn.execute("UPDATE decisions SET accepted = %s, labels = %s, rule = %s, cells = coalesce(%s::jsonb, cells)"
                       " WHERE study_id = %s",
                       (e.accepted, json.dumps(e.labels), e.rule, _cells_json(e.cells), e.study_id))
    await conn.execute("UPDATE adjudications SET applied_at = now() WHERE adjudication_id = %s", (e.adjudication_id,))
