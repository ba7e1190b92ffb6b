"""A vote that asks for the reader's next assignment (`POST .../vote?next=true`) opens it in the
vote's own statement (services/gateway/repo/reviews.py `record_vote_and_open_next`), on the
gateway's real tables in the test Postgres: still two round trips,
the next read opened only if the vote commits, and two votes of one reader in flight at once never
wait on each other's assignment (SKIP LOCKED), where the plain statement would."""

from __future__ import annotations

import os

import psycopg
import pytest
from psycopg.rows import dict_row

from services.common.contracts import Protocol, VoteCast
from services.common.protocols.cxr.judgement import LabelVerdict
from services.gateway.repo import reviews
from services.gateway.repo.conn import autocommit
from tests.integration.test_gateway_round_trips import _as_the_pool_gave_it, round_trips

pytestmark = pytest.mark.integration
COLUMNS = "a.assignment_id, a.study_id, a.opened_at, s.report_text"


@pytest.fixture
async def conn(gateway_dsn):
    """r1 has four open reads, A (oldest) to D; r2 one."""
    conn = await psycopg.AsyncConnection.connect(gateway_dsn, row_factory=dict_row, autocommit=False)
    for i, (name, reader) in enumerate((("A", "r1"), ("B", "r1"), ("C", "r1"), ("D", "r1"), ("E", "r2"))):
        await conn.execute("INSERT INTO studies (study_id, patient_id, protocol, study_instance_uid, report_text,"
                           " correlation_id) VALUES (%s, 'P', 'cxr-label-verification', %s, 'report', 'c')",
                           (f"S-{name}", f"1.2.{i}"))
        await conn.execute("INSERT INTO assignments (assignment_id, study_id, reader_id, run_id, difficulty, suggested,"
                           " unmapped, assigned_at) VALUES (%s, %s, %s, 'run', 'easy', '[]', '[]',"
                           " now() - make_interval(mins => 10 - %s))", (name, f"S-{name}", reader, i))
    await conn.commit()
    yield conn
    await conn.close()


def _event(assignment_id: str, reader: str = "r1") -> VoteCast:
    return VoteCast(study_id=f"S-{assignment_id}", protocol=Protocol.CXR, vote_id=f"v-{assignment_id}",
                    assignment_id=assignment_id, reader_id=reader, seconds_spent=10,
                    judgement=LabelVerdict(verdict="agree_all", added_labels=[], removed_labels=[]))


async def _vote_with_next(conn, assignment_id: str, skip: list[str]) -> dict | None:
    """What cast_vote does for `next=true`: lock, record, open the next, fetch it after the commit."""
    async with reviews.vote_transaction(conn):
        locked = await reviews.lock_assignment(conn, assignment_id)
        assert locked is not None and locked["vote_id"] is None
        following = await reviews.record_vote_and_open_next(conn, _event(assignment_id), None, [], skip, COLUMNS)
    return await following.fetchone()


async def _scalar(conn, sql: str, *args):
    cur = await conn.execute(sql, args)
    row = await cur.fetchone()
    await conn.commit()
    return next(iter(row.values()))


async def test_the_next_read_travels_with_the_vote_in_its_two_round_trips(conn, tmp_path):
    trace = tmp_path / "vote.trace"
    fd = os.open(trace, os.O_WRONLY | os.O_CREAT)
    conn.pgconn.trace(fd)
    try:
        following = await _vote_with_next(conn, "A", ["C"])
    finally:
        conn.pgconn.untrace()
        os.close(fd)
    assert round_trips(trace) == 2, trace.read_text()
    assert _as_the_pool_gave_it(conn)
    # The oldest open read not skipped, opened (as GET /next opens it) in the vote's transaction.
    assert following is not None and following["assignment_id"] == "B" and following["opened_at"] is not None
    assert following["report_text"] == "report"
    assert await _scalar(conn, "SELECT status FROM assignments WHERE assignment_id = 'A'") == "voted"
    assert await _scalar(conn, "SELECT count(*) FROM votes WHERE assignment_id = 'A'") == 1
    assert await _scalar(conn, "SELECT count(*) FROM outbox WHERE msg_key = 'S-A'") == 1
    assert await _scalar(conn, "SELECT opened_at IS NOT NULL FROM assignments WHERE assignment_id = 'B'")
    # Nothing left beyond the skipped ones: no row (the answer's `next_assignment: null`).
    assert await _vote_with_next(conn, "B", ["C", "D"]) is None
    # Another reader's reads are never opened for r1.
    assert await _scalar(conn, "SELECT opened_at IS NULL FROM assignments WHERE assignment_id = 'E'")


async def test_a_vote_that_fails_at_commit_opens_nothing(conn):
    await conn.execute("INSERT INTO votes (vote_id, assignment_id, study_id, reader_id, judgement, comment,"
                       " seconds_spent, confirmed_omissions) VALUES ('other', 'A', 'S-A', 'r1', '{}', '', 1, '[]')")
    await conn.commit()
    with pytest.raises(psycopg.errors.UniqueViolation):  # a concurrent duplicate: raised when the transaction ends
        async with reviews.vote_transaction(conn):
            await reviews.lock_assignment(conn, "A")
            await reviews.record_vote_and_open_next(conn, _event("A"), None, [], [], COLUMNS)
    assert _as_the_pool_gave_it(conn)
    assert await _scalar(conn, "SELECT count(*) FROM assignments WHERE opened_at IS NOT NULL") == 0
    assert await _scalar(conn, "SELECT status FROM assignments WHERE assignment_id = 'A'") == "open"


async def test_two_votes_of_one_reader_in_flight_never_wait_on_each_other(conn, gateway_dsn):
    """r1 votes on B in one transaction (not yet committed) while another of r1's votes, on C, asks
    for the next read: the oldest open one, A, is free; B is locked by the vote in flight. The
    vote's statement skips B rather than waiting for it (lock_timeout turns a wait into an error),
    where the plain GET /next statement waits: two such votes, each waiting for the other's
    assignment, would deadlock."""
    other = await psycopg.AsyncConnection.connect(gateway_dsn, row_factory=dict_row, autocommit=False)
    try:
        await other.execute("SELECT 1 FROM assignments WHERE assignment_id = 'B' FOR UPDATE")  # B's vote in flight
        await conn.execute("UPDATE assignments SET opened_at = now() WHERE assignment_id = 'A'")
        await conn.execute("UPDATE assignments SET status = 'voted' WHERE assignment_id = 'A'")  # A voted already
        await conn.commit()
        await conn.execute("SET lock_timeout = '2s'")
        await conn.commit()
        assert (await _vote_with_next(conn, "C", []))["assignment_id"] == "D"  # B skipped, not waited for
        with pytest.raises(psycopg.errors.LockNotAvailable):
            async with autocommit(conn):
                cur = await conn.execute(
                    "UPDATE assignments a SET opened_at = now() WHERE a.assignment_id = ("
                    " SELECT assignment_id FROM assignments WHERE reader_id = 'r1' AND status = 'open'"
                    " ORDER BY assigned_at LIMIT 1) RETURNING a.assignment_id")
                await cur.fetchone()
        await other.rollback()
        assert (await reviews.open_next(conn, "r1", [], COLUMNS))["assignment_id"] == "B"  # free again: B is next
    finally:
        await other.close()
