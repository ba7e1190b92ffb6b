"""A vote on a read the gateway process opened for its reader (`GET /next`, or the previous vote's
next assignment) is judged from what was opened and written in ONE statement and one round trip
(services/gateway/opened_reads.py, repo `record_vote_on_open_read`), where the locking way takes two.
Whenever that statement finds the read no longer open to its reader (voted from another page,
expired by a re-offer) it writes nothing and the vote takes the locking way, which answers as it
always has: the original vote for a retry with its key, 409 otherwise. On the gateway's real tables
in the test Postgres, through `cast_vote` and `next_for` as both the hot path and FastAPI call them."""

from __future__ import annotations

import asyncio
import os
from types import SimpleNamespace

import pytest

from services.common.db import open_pool
from services.gateway.api.routes.reviews import VoteIn, cast_vote, next_for
from services.gateway.opened_reads import opened_reads
from services.gateway.problems import Problem
from tests.integration.test_gateway_round_trips import _as_the_pool_gave_it, round_trips

pytestmark = pytest.mark.integration
READS = 10  # r1's open reads R0 (oldest) .. R9


class _Relay:
    def __init__(self) -> None:
        self.notified = 0
        self.at_once: list[bool] = []  # per notify: whether the commit was to go without the quiet gap

    def notify(self, at_once: bool = False) -> None:
        self.notified += 1
        self.at_once.append(at_once)


async def _pool(dsn: str, max_size: int):
    """A pool on the gateway's tables with r1's open reads R0 (oldest) .. R9."""
    pool = await open_pool(dsn, min_size=1, max_size=max_size)
    async with pool.connection() as conn:
        for i in range(READS):
            await conn.execute(
                "INSERT INTO studies (study_id, patient_id, protocol, study_instance_uid, report_text, correlation_id)"
                " VALUES (%s, 'P', 'cxr-label-verification', %s, 'report', 'c')", (f"S{i}", f"1.2.{i}"))
            await conn.execute(
                "INSERT INTO assignments (assignment_id, study_id, reader_id, run_id, difficulty, suggested,"
                " unmapped, assigned_at) VALUES (%s, %s, 'r1', 'run', 'easy', '[]', '[]',"
                " now() - make_interval(mins => 60 - %s))",
                (f"R{i}", f"S{i}", i))
        await conn.commit()
    return pool


@pytest.fixture
async def pool(gateway_dsn):
    pool = await _pool(gateway_dsn, 2)
    yield pool
    await pool.close()


def _res(pool) -> SimpleNamespace:
    return SimpleNamespace(pool=pool, relay=_Relay(), extra={})


def _body(**fields) -> VoteIn:
    return VoteIn.model_validate({"verdict": "agree_all", "confirm": True, "seconds_spent": 12, **fields})


async def _scalar(pool, sql: str, *args):
    async with pool.connection() as conn:
        row = await (await conn.execute(sql, args)).fetchone()
    return next(iter(row.values()))


async def _traced(pool, tmp_path, name: str, call):
    """`call()` with the libpq trace of the pool's connection (the one in use: max one at a time here)."""
    async with pool.connection() as conn:
        trace = tmp_path / f"{name}.trace"
        fd = os.open(trace, os.O_WRONLY | os.O_CREAT)
        conn.pgconn.trace(fd)
    try:
        result = await call()
    finally:
        async with pool.connection() as conn:
            conn.pgconn.untrace()
            os.close(fd)
            assert _as_the_pool_gave_it(conn)
    return result, round_trips(trace)


async def test_a_vote_on_the_read_the_gateway_opened_is_one_round_trip(gateway_dsn, tmp_path):
    pool = await _pool(gateway_dsn, 1)  # one connection: the one traced
    try:
        res = _res(pool)
        opened = await next_for(res, "r1", [])
        assert opened is not None and opened.assignment_id == "R0"
        for i in range(6):  # psycopg prepares a statement on its fifth use: count after that
            out, replayed = await cast_vote(res, "r1", f"R{i}", _body(), f"k{i}", [])
            assert not replayed and out.next_assignment.assignment_id == f"R{i + 1}"
        out, trips = await _traced(pool, tmp_path, "vote", lambda: cast_vote(res, "r1", "R6", _body(), "k6", []))
        assert trips == 1
        vote, replayed = out
        assert not replayed and vote.assignment_id == "R6" and vote.verdict == "agree_all"
        assert vote.next_assignment.assignment_id == "R7"  # opened in the vote's statement, remembered in turn
        assert await _scalar(pool, "SELECT status FROM assignments WHERE assignment_id = 'R6'") == "voted"
        assert await _scalar(pool, "SELECT opened_at IS NOT NULL FROM assignments WHERE assignment_id = 'R7'")
        row = await _scalar(pool, "SELECT to_jsonb(v) FROM votes v WHERE assignment_id = 'R6'")
        assert (row["vote_id"], row["study_id"], row["reader_id"], row["idempotency_key"], row["seconds_spent"],
                row["judgement"]["verdict"]) == (vote.vote_id, "S6", "r1", "k6", 12, "agree_all")
        payload = await _scalar(pool, "SELECT payload FROM outbox WHERE msg_key = 'S6'")
        assert payload["vote_id"] == vote.vote_id and payload["assignment_id"] == "R6"
        assert res.relay.notified == 7
        # Without `next`: one round trip too, and nothing opened.
        (vote, _), trips = await _traced(pool, tmp_path, "plain", lambda: cast_vote(res, "r1", "R7", _body(), None))
        assert trips == 1 and vote.assignment_id == "R7" and "next_assignment" not in vote.model_dump()
        assert await _scalar(pool, "SELECT count(*) FROM assignments WHERE opened_at IS NOT NULL") == 8
        # A read the gateway did not open (R9: another process's, or let go) is voted the locking way.
        (vote, _), trips = await _traced(pool, tmp_path, "locking", lambda: cast_vote(res, "r1", "R9", _body(), None))
        assert trips == 2 and vote.assignment_id == "R9"
        assert await _scalar(pool, "SELECT count(*) FROM votes") == await _scalar(pool, "SELECT count(*) FROM outbox")
    finally:
        await pool.close()


async def test_a_read_no_longer_open_to_its_reader_is_voted_the_locking_way(pool):
    res = _res(pool)
    assert (await next_for(res, "r1", [])).assignment_id == "R0"
    # R0 is voted from another page (another process: nothing remembered there) with key k1.
    other_page = _res(pool)
    first, replayed = await cast_vote(other_page, "r1", "R0", _body(), "k1", None)
    assert not replayed
    # This process still remembers R0 as open: its statement writes nothing, the locking way answers.
    again, replayed = await cast_vote(res, "r1", "R0", _body(seconds_spent=99), "k1", [])
    assert replayed and again.vote_id == first.vote_id
    assert again.next_assignment.assignment_id == "R1"  # the retry's next read, as GET /next opens it
    with pytest.raises(Problem) as refused:  # R1, just opened, is voted elsewhere with another key
        await cast_vote(other_page, "r1", "R1", _body(), "k2", None)
        await cast_vote(res, "r1", "R1", _body(), "k3", None)
    assert refused.value.status == 409 and "already voted" in refused.value.detail
    # R2 opened here, then re-offered to another reader (the read model expires it): 409, nothing written.
    assert (await next_for(res, "r1", ["R1"])).assignment_id == "R2"
    async with pool.connection() as conn:
        await conn.execute("UPDATE assignments SET status = 'expired' WHERE assignment_id = 'R2'")
        await conn.commit()
    with pytest.raises(Problem) as expired:
        await cast_vote(res, "r1", "R2", _body(), "k4", [])
    assert expired.value.status == 409 and "re-offered" in expired.value.detail
    assert await _scalar(pool, "SELECT count(*) FROM votes") == 2
    assert await _scalar(pool, "SELECT count(*) FROM outbox") == 2
    assert await _scalar(pool, "SELECT count(*) FROM assignments WHERE status = 'voted'") == 2
    assert len(opened_reads(res.extra)) == 0  # each remembered read was taken by its vote


async def test_someone_elses_vote_on_a_remembered_read_is_refused_and_leaves_it_remembered(pool):
    res = _res(pool)
    assert (await next_for(res, "r1", [])).assignment_id == "R0"
    with pytest.raises(Problem) as refused:
        await cast_vote(res, "r2", "R0", _body(), None, None)
    assert refused.value.status == 404
    assert len(opened_reads(res.extra)) == 1  # still r1's to vote in one statement
    vote, replayed = await cast_vote(res, "r1", "R0", _body(), None, None)
    assert not replayed and await _scalar(pool, "SELECT reader_id FROM votes") == "r1"


async def test_a_refused_judgement_writes_nothing_and_answers_as_the_locking_way(pool):
    res = _res(pool)
    assert (await next_for(res, "r1", [])).assignment_id == "R0"
    with pytest.raises(Problem) as refused:
        await cast_vote(res, "r1", "R0", _body(added=["x"]), None, [])  # a field no protocol defines
    assert refused.value.status == 422 and "body.added" in refused.value.detail
    assert await _scalar(pool, "SELECT count(*) FROM votes") == 0
    assert await _scalar(pool, "SELECT status FROM assignments WHERE assignment_id = 'R0'") == "open"
    assert await _scalar(pool, "SELECT count(*) FROM assignments WHERE opened_at IS NOT NULL") == 1


async def test_two_copies_of_one_vote_at_once_record_it_once(pool):
    res = _res(pool)
    assert (await next_for(res, "r1", [])).assignment_id == "R0"
    (a, a_replayed), (b, b_replayed) = await asyncio.gather(
        cast_vote(res, "r1", "R0", _body(), "same", []), cast_vote(res, "r1", "R0", _body(), "same", []))
    assert sorted([a_replayed, b_replayed]) == [False, True] and a.vote_id == b.vote_id
    assert await _scalar(pool, "SELECT count(*) FROM votes") == 1
    assert await _scalar(pool, "SELECT count(*) FROM outbox") == 1


async def test_a_vote_that_leaves_its_reader_nothing_next_is_sent_without_the_quiet_gap(pool):
    """The relay holds a vote for its quiet gap in case more follow; the vote whose answer has no
    next read (the campaign's last vote is one) is sent at once, on the one-statement path and the
    locking one alike. A vote with a next read, or one that did not ask for it, waits as before."""
    res = _res(pool)
    assert (await next_for(res, "r1", [])).assignment_id == "R0"
    for i in range(READS - 2):  # R0 .. R7, each answered with the next read
        vote, _ = await cast_vote(res, "r1", f"R{i}", _body(), f"k{i}", [])
        assert vote.next_assignment is not None
    plain, _ = await cast_vote(res, "r1", "R8", _body(), "k8", None)  # not asked: nothing known
    assert "next_assignment" not in plain.model_dump()
    assert res.relay.at_once == [False] * (READS - 1)
    # R9 was never opened here: the locking way, and nothing is left for r1 after it.
    last, _ = await cast_vote(res, "r1", "R9", _body(), "k9", [])
    assert last.next_assignment is None
    assert res.relay.at_once == [False] * (READS - 1) + [True]
    # The same on the one-statement path: a read opened here, voted with nothing after it.
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO studies (study_id, patient_id, protocol, study_instance_uid, report_text, correlation_id)"
            " VALUES ('S10', 'P', 'cxr-label-verification', '1.2.10', 'report', 'c')")
        await conn.execute(
            "INSERT INTO assignments (assignment_id, study_id, reader_id, run_id, difficulty, suggested,"
            " unmapped, assigned_at) VALUES ('R10', 'S10', 'r1', 'run', 'easy', '[]', '[]', now())")
        await conn.commit()
    assert (await next_for(res, "r1", [])).assignment_id == "R10"
    assert len(opened_reads(res.extra)) == 1  # R10, remembered: its vote takes the one-statement path
    last, _ = await cast_vote(res, "r1", "R10", _body(), "k10", [])
    assert len(opened_reads(res.extra)) == 0
    assert last.next_assignment is None and res.relay.at_once[-1] is True
