"""services/common/listener.py against real Postgres: one LISTEN connection shared by every waiter
(the release wait's, `GET /api/v1/releases/{id}?wait=`). A waiter registers before it reads, so a
notification sent between its read and its wait still wakes it; a waiter whose key is never
notified ends at its deadline, read once more; the waiters one notification wakes share one read;
a Postgres that cannot be reached ends a wait at its deadline too, and `close` ends the waits in progress at once."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from services.common.listener import Listener

pytestmark = pytest.mark.integration
CHANNEL = "listener_test"


async def test_a_notification_between_a_waiters_read_and_its_wait_wakes_it(fresh_schema):
    listener = Listener(fresh_schema, CHANNEL)
    state = {"released": False, "reads": 0}

    async def read() -> bool:
        state["reads"] += 1
        seen = state["released"]
        if state["reads"] == 1:
            # Recorded and notified after this read saw it missing, and heard by the listener
            # while the read is still in flight (as when it waits on Postgres's answer): before
            # the waiter waits.
            state["released"] = True
            with psycopg.connect(fresh_schema, autocommit=True) as conn:
                conn.execute("SELECT pg_notify(%s, 'k')", (CHANNEL,))
            await asyncio.sleep(0.3)
        return seen

    try:
        started = time.monotonic()
        assert await listener.wait("k", read, bool, 20) is True
        assert time.monotonic() - started < 5 and state["reads"] == 2  # woken, not at the deadline
        assert listener.waiting == 0
    finally:
        await listener.close()


async def test_waiters_on_other_keys_wait_on_until_their_deadline(fresh_schema):
    listener = Listener(fresh_schema, CHANNEL)
    reads: list[str] = []

    async def read_for(key: str) -> str:
        reads.append(key)
        return "requested"

    try:
        started = time.monotonic()
        other = asyncio.create_task(listener.wait("b", lambda: read_for("b"), lambda v: False, 1.0))
        mine = asyncio.create_task(listener.wait("a", lambda: read_for("a"), lambda v: False, 1.0))
        await asyncio.sleep(0.3)
        assert listener.waiting == 2 and listener.connects == 1  # two waiters, one connection
        with psycopg.connect(fresh_schema, autocommit=True) as conn:
            conn.execute("SELECT pg_notify(%s, 'b')", (CHANNEL,))
        assert await mine == "requested" and await other == "requested"
        assert time.monotonic() - started >= 1.0
        # a: its first read and the one at its deadline; b: one more, for its notification.
        assert reads.count("a") == 2 and reads.count("b") == 3
    finally:
        await listener.close()


async def test_the_waiters_a_notification_wakes_share_one_read(fresh_schema):
    listener = Listener(fresh_schema, CHANNEL)
    state = {"released": False}

    async def read() -> bool:
        await asyncio.sleep(0.01)  # a read takes a while: the woken waiters join it
        return state["released"]

    try:
        waiters = [asyncio.create_task(listener.wait("k", read, bool, 20)) for _ in range(20)]
        await asyncio.sleep(0.5)
        assert listener.waiting == 20
        before = listener.reads
        state["released"] = True
        with psycopg.connect(fresh_schema, autocommit=True) as conn:
            conn.execute("SELECT pg_notify(%s, 'k')", (CHANNEL,))
        assert await asyncio.gather(*waiters) == [True] * 20
        assert listener.reads - before == 1  # one read for the twenty (Postgres answers it once)
    finally:
        await listener.close()


async def test_an_unreachable_postgres_ends_a_wait_at_its_deadline():
    listener = Listener("host=127.0.0.1 port=1 user=nobody dbname=none connect_timeout=1", CHANNEL)
    try:
        started = time.monotonic()
        assert await listener.wait("k", _requested, lambda v: False, 0.5) == "requested"
        assert 0.5 <= time.monotonic() - started < 3
    finally:
        await listener.close()


async def test_close_ends_the_waits_in_progress(fresh_schema):
    listener = Listener(fresh_schema, CHANNEL)
    waiting = asyncio.create_task(listener.wait("k", _requested, lambda v: False, 30))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await listener.close()
    assert await waiting == "requested" and time.monotonic() - started < 2


async def _requested() -> str:
    return "requested"
