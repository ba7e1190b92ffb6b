"""The reader's hot path pays the round trips services/gateway/repo/reviews.py says it does: one for
the next assignment's statement, two for a vote (BEGIN + locking read; write + COMMIT), and one for
the token lookup a reader's requests make every few seconds (repo/users.py `by_token`). Counted
from a libpq protocol trace against the test Postgres, after psycopg has prepared the statements;
psycopg's own transaction handling paid 3 and 5. A refused or failed vote is rolled back and the
connection goes back to the pool as it came: idle, autocommit off."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from services.gateway.problems import Problem
from services.gateway.repo import users
from services.gateway.repo.conn import autocommit
from services.gateway.repo.reviews import vote_transaction

pytestmark = pytest.mark.integration


def round_trips(trace: Path) -> int:
    """How many times the client sent and then waited for the server: F-lines followed by B-lines."""
    directions = [line.split("\t")[1] for line in trace.read_text().splitlines() if "\t" in line]
    return sum(1 for a, b in zip(directions, directions[1:], strict=False) if a == "F" and b == "B")


@pytest.fixture
async def conn(fresh_schema):
    conn = await psycopg.AsyncConnection.connect(fresh_schema, row_factory=dict_row, autocommit=False)
    await conn.execute("CREATE TABLE reads (read_id int PRIMARY KEY, n int NOT NULL)")
    await conn.execute("INSERT INTO reads VALUES (1, 0)")
    await conn.execute("CREATE TABLE users (user_id text PRIMARY KEY, display_name text, role text, token_sha256 text,"
                       " active boolean NOT NULL DEFAULT true, token_expires_at timestamptz)")
    await conn.execute("INSERT INTO users VALUES ('r1', 'R', 'reviewer', 'h1', true, now() + interval '1 hour')")
    await conn.commit()
    yield conn
    await conn.close()


async def _next(conn) -> dict:
    async with autocommit(conn):
        cur = await conn.execute("UPDATE reads SET n = n + 1 WHERE read_id = %s RETURNING n", (1,))
        return await cur.fetchone()


async def _token(conn) -> None:
    user = await users.by_token(conn, "h1")
    assert user is not None and user["user_id"] == "r1" and 3590 < user["seconds_left"] <= 3600


async def _vote(conn, insert_id: int = 2) -> None:
    async with vote_transaction(conn):
        await conn.execute("SET LOCAL synchronous_commit = on")
        cur = await conn.execute("SELECT n FROM reads WHERE read_id = %s FOR UPDATE", (1,))
        assert await cur.fetchone() is not None
        await conn.execute("INSERT INTO reads VALUES (%s, 0)", (insert_id,))


def _as_the_pool_gave_it(conn) -> bool:
    return conn.info.transaction_status == TransactionStatus.IDLE and not conn.autocommit


async def test_next_is_one_round_trip_a_vote_two_and_a_token_lookup_one(conn, tmp_path):
    for i in range(6):  # psycopg prepares a statement on its fifth use: count after that
        await _next(conn)
        await _vote(conn, 100 + i)
        await _token(conn)
    for name, call, expected in (("next", _next, 1), ("vote", _vote, 2), ("token", _token, 1)):
        trace = tmp_path / f"{name}.trace"
        fd = os.open(trace, os.O_WRONLY | os.O_CREAT)
        conn.pgconn.trace(fd)
        try:
            await call(conn)
        finally:
            conn.pgconn.untrace()
            os.close(fd)
        assert round_trips(trace) == expected, trace.read_text()
        assert _as_the_pool_gave_it(conn)
    assert (await (await conn.execute("SELECT count(*) AS n FROM reads WHERE read_id = 2")).fetchone())["n"] == 1


async def test_a_refused_or_failed_vote_is_rolled_back_and_the_connection_is_left_idle(conn):
    with pytest.raises(Problem):
        async with vote_transaction(conn):
            await conn.execute("INSERT INTO reads VALUES (3, 0)")
            raise Problem(409, "refused after the read")
    assert _as_the_pool_gave_it(conn)
    with pytest.raises(psycopg.errors.UniqueViolation):
        await _vote(conn, insert_id=1)  # read 1 exists: the write fails when the transaction ends
    assert _as_the_pool_gave_it(conn)
    cur = await conn.execute("SELECT read_id FROM reads ORDER BY read_id")
    assert [r["read_id"] for r in await cur.fetchall()] == [1]  # neither the refused nor the failed write stayed
    await conn.rollback()
