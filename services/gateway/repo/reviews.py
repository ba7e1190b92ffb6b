"""The reviewer's assignments and votes in the gateway's tables, each in as few round trips as it can be.

A busy gateway's connection is held while its event loop serves other requests, and every round
trip wakes Postgres and the gateway once more, so each one is paid in CPU and in pool waits.
psycopg's own transaction handling costs more than it looks: with autocommit off it sends BEGIN
and waits for it before the first statement, and a pipeline adds a Sync round trip at its end
(libpq trace: the next assignment took 3 round trips, a vote 5). Hence these two run on the
connection in autocommit mode with their own BEGIN/COMMIT:
- the next assignment is one statement, its own transaction: one round trip;
- a vote is two: BEGIN and the locking read, then — after the protocol has judged the vote in
  Python — one statement that inserts the vote, marks the assignment voted and records the
  outbox row, sent together with COMMIT (`vote_transaction`). The vote's commit waits for its WAL
  whatever the server's default (the pool sets `synchronous_commit = on` on each connection once);
- a vote that asks for the reader's next assignment as well opens it in that same statement
  (`record_vote_and_open_next`), inside the vote's transaction: no statement or round trip more,
  and no second request;
- a vote on a read this gateway process opened for the reader (services/gateway/opened_reads.py),
  judged from what was opened, is ONE statement and one round trip (`record_vote_on_open_read`),
  written only while the read is still the reader's and open; otherwise it takes the two above.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from services.common import outbox
from services.common.contracts import VoteCast
from services.gateway import judgements
from services.gateway.repo.conn import Conn, Cursor, Row, autocommit


async def open_next(conn: Conn, reader_id: str, skip: Sequence[str], columns: str) -> Row | None:
    """Open the reader's oldest open assignment not in `skip` (its `opened_at` set once), committed;
    the row with `columns` (aliases `a` for assignments, `s` for studies), or None."""
    async with autocommit(conn):  # the one statement is its own transaction: one round trip
        cur = await conn.execute(
            "UPDATE assignments a SET opened_at = coalesce(a.opened_at, now()) FROM studies s"
            " WHERE s.study_id = a.study_id AND a.assignment_id = ("
            " SELECT assignment_id FROM assignments WHERE reader_id = %s AND status = 'open'"
            " AND NOT assignment_id = ANY(%s) ORDER BY assigned_at, study_id LIMIT 1)"
            f" RETURNING {columns}", (reader_id, list(skip)))
        return await cur.fetchone()


# A reader's `GET /next` whose token is not in the gateway's token cache (its first request, and
# again once the cache has let it go, auth.TOKEN_TTL_SECONDS): the token looked up (as users.by_token
# looks it up) and the reader's next assignment opened (as `open_next` opens it) in one statement.
# Only a reviewer's assignment is opened: an unknown, expired or inactive token gives no row, another
# role a row whose assignment columns are null, and neither opens anything. The user's columns are
# prefixed `token_` so they cannot clash with `columns`.
_LOOK_UP_AND_OPEN_NEXT = (
    "WITH u AS (SELECT user_id, display_name, role,"
    " extract(epoch FROM token_expires_at - now())::float8 AS seconds_left"
    " FROM users WHERE token_sha256 = %(token_sha256)s AND active"
    " AND (token_expires_at IS NULL OR token_expires_at > now())),"
    " a AS (UPDATE assignments a SET opened_at = coalesce(a.opened_at, now()) FROM studies s"
    " WHERE s.study_id = a.study_id AND a.assignment_id = ("
    " SELECT assignment_id FROM assignments WHERE reader_id = (SELECT user_id FROM u WHERE role = %(role)s)"
    " AND status = 'open' AND NOT assignment_id = ANY(%(skip)s) ORDER BY assigned_at, study_id LIMIT 1)"
    " RETURNING {columns})"
    " SELECT u.user_id AS token_user_id, u.display_name AS token_display_name, u.role AS token_role,"
    " u.seconds_left AS token_seconds_left, a.* FROM u LEFT JOIN a ON true")


async def look_up_and_open_next(conn: Conn, token_sha256: str, role: str, skip: Sequence[str],
                                columns: str) -> Row | None:
    """The token's user and, if the user has `role`, its next assignment opened, committed, in one
    statement and one round trip (where the token lookup and `open_next` take two). None: no active
    user has this unexpired token, and nothing was opened. Otherwise the row has the user as
    `token_user_id`, `token_display_name`, `token_role` and `token_seconds_left` (users.by_token's
    columns), then `columns`: all null when nothing was opened (no open assignment, or another role)."""
    async with autocommit(conn):  # the one statement is its own transaction
        cur = await conn.execute(_LOOK_UP_AND_OPEN_NEXT.format(columns=columns),
                                 {"token_sha256": token_sha256, "role": role, "skip": list(skip)})
        return await cur.fetchone()


@asynccontextmanager
async def vote_transaction(conn: Conn) -> AsyncIterator[None]:
    """One transaction in one pipeline: BEGIN is sent with the block's first read, and COMMIT
    (or ROLLBACK, if the block raises) with its last statement and the pipeline's one Sync. An
    error from the statements (e.g. UniqueViolation for a concurrent duplicate vote) is raised
    when the block ends, and the transaction is rolled back."""
    async with autocommit(conn), conn.pipeline():
        await conn.execute("BEGIN")
        try:
            yield
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")


LOCK_COLUMNS = ("a.study_id, a.reader_id, a.status, a.suggested, a.unmapped, a.protocol,"
                " extract(epoch FROM now() - a.opened_at)::float8 AS open_seconds, v.vote_id, v.assignment_id,"
                f" v.idempotency_key, v.confirmed_omissions, {judgements.SELECT}")


async def lock_assignment(conn: Conn, assignment_id: str) -> Row | None:
    """The assignment, locked until the transaction ends, with its vote if it has one (call inside
    `vote_transaction`: the BEGIN travels with it).

    The vote's commit waits for its WAL whatever the server's default, so a vote the reader was
    told is recorded survives a Postgres crash: every pooled connection is set so once, when the
    pool opens it (`services.common.db.open_pool`, `_durable`; tested in test_durable_commits.py).
    A `SET LOCAL` here repeated that on every vote: a statement more for Postgres and the gateway."""
    cur = await conn.execute(
        f"SELECT {LOCK_COLUMNS} FROM assignments a LEFT JOIN votes v USING (assignment_id)"
        " WHERE a.assignment_id = %s FOR UPDATE OF a", (assignment_id,))
    return await cur.fetchone()


async def instances(conn: Conn, study_id: str) -> set[tuple[str, int]]:
    """The study's (series_instance_uid, instance_number) pairs: where a grid's points may lie."""
    cur = await conn.execute("SELECT series_instance_uid, instance_number FROM study_objects WHERE study_id = %s",
                             (study_id,))
    return {(r["series_instance_uid"], r["instance_number"]) for r in await cur.fetchall()}


# One statement: the vote, the assignment marked voted, the vote-cast event in the outbox (the
# same row outbox.record writes). A duplicate vote fails on votes' unique assignment_id.
_RECORD_VOTE = (
    "WITH done AS (UPDATE assignments SET status = 'voted' WHERE assignment_id = %(assignment_id)s),"
    " event AS (INSERT INTO outbox (event_id, topic, msg_key, payload)"
    " VALUES (%(event_id)s, %(topic)s, %(study_id)s, %(payload)s) ON CONFLICT (event_id) DO NOTHING)"
    " INSERT INTO votes (vote_id, assignment_id, study_id, reader_id, judgement,"
    " comment, seconds_spent, idempotency_key, confirmed_omissions)"
    " VALUES (%(vote_id)s, %(assignment_id)s, %(study_id)s, %(reader_id)s, %(judgement)s,"
    " %(comment)s, %(seconds_spent)s, %(idempotency_key)s, %(confirmed)s)")


async def record_vote(conn: Conn, e: VoteCast, idempotency_key: str | None,
                      confirmed: list[dict[str, Any]]) -> None:
    """Insert the vote, mark its assignment voted and record its event, in one statement of the
    caller's transaction. EventTooLarge before anything is sent if the event cannot travel; a
    concurrent duplicate raises UniqueViolation (in pipeline mode: when the transaction ends)."""
    await conn.execute(_RECORD_VOTE, _vote_params(e, idempotency_key, confirmed))


# The same, and the reader's next read opened (as `open_next` opens it) in the same statement: its
# row is the statement's result. The vote's own assignment is in `skip`, so the two UPDATEs of
# assignments never touch one row (the statement's snapshot still sees the voted one as open).
# SKIP LOCKED: an assignment another transaction holds locked is passed over, not waited for —
# a vote on it in flight (the reader's own, from another page or a retry) or another request
# opening it. Waiting could deadlock two votes of one reader, each holding its own assignment
# and waiting to open the other's; passing over gives the next free one, which `GET /next` would
# also give once the other vote is in.
_RECORD_VOTE_OPEN_NEXT = (
    _RECORD_VOTE.replace(" INSERT INTO votes ", ", vote AS (INSERT INTO votes ", 1)
    + "), a AS (UPDATE assignments a SET opened_at = coalesce(a.opened_at, now()) WHERE a.assignment_id = ("
    " SELECT assignment_id FROM assignments WHERE reader_id = %(reader_id)s AND status = 'open'"
    " AND NOT assignment_id = ANY(%(skip)s) ORDER BY assigned_at, study_id LIMIT 1 FOR UPDATE SKIP LOCKED)"
    " RETURNING a.*)"
    " SELECT {columns} FROM a JOIN studies s ON s.study_id = a.study_id")


async def record_vote_and_open_next(conn: Conn, e: VoteCast, idempotency_key: str | None,
                                    confirmed: list[dict[str, Any]], skip: Sequence[str], columns: str) -> Cursor:
    """`record_vote`, and the reader's oldest open assignment not in `skip` opened in the same
    statement (call inside `vote_transaction`): no statement or round trip more than the vote, and
    it commits with the vote or not at all. Its row (`columns`, as for `open_next`), or none, is on
    the returned cursor once the transaction has ended: fetching inside the pipeline would sync it,
    a round trip more."""
    return await conn.execute(_RECORD_VOTE_OPEN_NEXT.format(columns=columns), {
        **_vote_params(e, idempotency_key, confirmed), "skip": [e.assignment_id, *skip]})


# A vote on a read the gateway opened for its reader (services/gateway/opened_reads.py), judged from
# what was opened: one statement, its own transaction, one round trip. The assignment is marked voted
# only while it is still the reader's and still open (an open read has no vote: a vote marks it voted
# in the same statement), and the vote, its event and the next read are written only if it was (each
# reads `done`). The UPDATE's row lock serialises it with a locking vote or a re-offer of the same read,
# which see it voted, or make it see the read no longer open. `vote_recorded` is false when nothing was
# written; the next read's `columns` follow (all null when none was opened or none was asked for).
_RECORD_VOTE_ON_OPEN_READ = (
    "WITH done AS (UPDATE assignments SET status = 'voted' WHERE assignment_id = %(assignment_id)s"
    " AND reader_id = %(reader_id)s AND study_id = %(study_id)s AND status = 'open' RETURNING assignment_id),"
    " event AS (INSERT INTO outbox (event_id, topic, msg_key, payload)"
    " SELECT %(event_id)s, %(topic)s, %(study_id)s, %(payload)s::jsonb FROM done ON CONFLICT (event_id) DO NOTHING),"
    " vote AS (INSERT INTO votes (vote_id, assignment_id, study_id, reader_id, judgement,"
    " comment, seconds_spent, idempotency_key, confirmed_omissions)"
    " SELECT %(vote_id)s, %(assignment_id)s, %(study_id)s, %(reader_id)s, %(judgement)s::jsonb,"
    " %(comment)s, %(seconds_spent)s::float8, %(idempotency_key)s, %(confirmed)s::jsonb FROM done)"
    "{open_next}"
    " SELECT EXISTS (SELECT 1 FROM done) AS vote_recorded{following}")
# The next read, opened as `_RECORD_VOTE_OPEN_NEXT` opens it, and only if the vote was written.
_OPEN_NEXT_AFTER_VOTE = (
    ", a AS (UPDATE assignments a SET opened_at = coalesce(a.opened_at, now()) WHERE a.assignment_id = ("
    " SELECT assignment_id FROM assignments WHERE reader_id = %(reader_id)s AND status = 'open'"
    " AND NOT assignment_id = ANY(%(skip)s) AND EXISTS (SELECT 1 FROM done)"
    " ORDER BY assigned_at, study_id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING a.*)")


async def record_vote_on_open_read(conn: Conn, e: VoteCast, idempotency_key: str | None,
                                   confirmed: list[dict[str, Any]], skip: Sequence[str] | None,
                                   columns: str) -> Row:
    """Record the vote in one statement and one round trip, as its own transaction (call outside
    any transaction), if its assignment is still its reader's and still open; with `skip` (not
    None) the reader's next read opened in the same statement, as `record_vote_and_open_next` opens
    it. The row: `vote_recorded` (False: nothing was written or opened; cast the vote the locking
    way, which says why), then `columns` of the next read (null when none was opened)."""
    if skip is None:
        sql = _RECORD_VOTE_ON_OPEN_READ.format(open_next="", following="")
        params = _vote_params(e, idempotency_key, confirmed)
    else:
        sql = _RECORD_VOTE_ON_OPEN_READ.format(
            open_next=_OPEN_NEXT_AFTER_VOTE,
            following=f", n.* FROM (SELECT {columns} FROM a JOIN studies s ON s.study_id = a.study_id) n"
                      " RIGHT JOIN (VALUES (1)) one ON true")
        params = {**_vote_params(e, idempotency_key, confirmed), "skip": [e.assignment_id, *skip]}
    async with autocommit(conn):  # the one statement is its own transaction
        cur = await conn.execute(sql, params)
        row = await cur.fetchone()
    assert row is not None  # the final SELECT always gives one row
    return row


def _vote_params(e: VoteCast, idempotency_key: str | None, confirmed: list[dict[str, Any]]) -> dict[str, Any]:
    payload = e.model_dump_json()
    outbox.check_size(e.topic.value, e.event_id, len(payload.encode()))
    return {"assignment_id": e.assignment_id, "event_id": e.event_id, "topic": e.topic.value, "study_id": e.study_id,
            "payload": payload, "vote_id": e.vote_id, "reader_id": e.reader_id,
            "judgement": e.judgement.model_dump_json(), "comment": e.comment, "seconds_spent": e.seconds_spent,
            "idempotency_key": idempotency_key, "confirmed": json.dumps(confirmed)}


async def open_assignments(conn: Conn, reader_id: str, state: str, limit: int,
                           columns: str) -> list[Row]:
    """The reader's assignments in `state`, oldest first, held-out studies left out."""
    cur = await conn.execute(
        f"SELECT {columns} FROM assignments a JOIN studies s USING (study_id)"
        " WHERE a.reader_id = %s AND a.status = %s"
        " AND NOT EXISTS (SELECT 1 FROM holdout_studies h WHERE h.study_id = a.study_id)"  # held out: gone
        " ORDER BY a.assigned_at, a.study_id LIMIT %s",
        (reader_id, state, limit))
    return await cur.fetchall()
