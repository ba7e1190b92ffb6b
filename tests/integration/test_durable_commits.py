"""A commit the outside has acted on survives a SIGKILL of Postgres (issue 11 item 7).

The fault test lost acknowledged votes: consensus's group committed an offset past votes whose
effects Postgres no longer held. Two holes led there, both shown here: a batch cut short by
Postgres's death (psycopg ends the transaction block on the broken connection silently, without
committing, and the offset moved on), and asynchronous commits (`synchronous_commit=off` on the
local cluster: a COMMIT returned while its WAL was still in Postgres's shared memory, which dies
with the processes). Either way the group said "done", so nothing delivered the votes again.

Each test kills a real Postgres (postmaster and every backend at once, as the fault test and an
OOM kill do) right after a commit that something outside the database has acted on, restarts it
on the same data, and looks for the commit. Clusters that must not lose it even when configured
with `synchronous_commit=off` run with `wal_writer_delay=10s`: that only widens the window in
which an asynchronous commit lives in memory alone (up to 3 × 200 ms at the default) so that
the kill falls inside it every time, not only by bad luck.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from radcurate.stack import postgres
from radcurate.stack.procs import alive
from services.common import outbox
from services.common.consumer import EventConsumer, Handler
from services.common.db import COMMON_MIGRATIONS, TransactionNotCommitted, apply_migrations, open_pool, unit_of_work
from services.common.kafka import ensure_topics, make_producer
from tests.integration.test_outbox_and_consumer import produce, report
from tests.support.chaos import children

pytestmark = pytest.mark.integration

ASYNC_COMMITS = {"synchronous_commit": "off", "wal_writer_delay": "10s"}


class Cluster:
    """A Postgres cluster of this test's own, to be SIGKILLed and started again on its data."""

    def __init__(self, root: Path, settings: dict[str, str]) -> None:
        self.root, self.settings = root, settings
        self.info: dict[str, Any] = {}
        self.start()
        self.dsn = postgres.bootstrap(self.info["admin_dsn"], ["durable"], {"durable": "durable-test"})["durable"]
        apply_migrations(self.dsn, sorted(COMMON_MIGRATIONS.glob("*.sql")))
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE effects (event_id text PRIMARY KEY)")
        with psycopg.connect(self.info["admin_dsn"], autocommit=True) as conn:
            conn.execute("CHECKPOINT")  # the setup is on disk: only what the test commits is at stake

    def start(self) -> None:
        self.info = postgres.start(self.root / "data", self.root / "postgres.log",
                                   previous_port=self.info.get("port"),
                                   admin_password=self.info.get("admin_password"), settings=self.settings)

    def kill(self) -> None:
        """SIGKILL the postmaster and all its backends at once (their shared memory goes with them)."""
        pid = self.info["pid"]
        for victim in [pid, *children(pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)

    def effects(self) -> int:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute("SELECT count(*) FROM effects").fetchone()[0]

    def inbox(self) -> int:
        with psycopg.connect(self.dsn) as conn:
            return conn.execute("SELECT count(*) FROM inbox").fetchone()[0]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Cluster]]:
    made: list[Cluster] = []

    def make(settings: dict[str, str]) -> Cluster:
        made.append(Cluster(tmp_path / f"pg{len(made)}", settings))
        return made[-1]

    yield make
    for c in made:
        c.kill()


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    """The group's committed offset, as a restarted consumer would find it."""
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await probe.start()
    try:
        return await probe.committed(tp)
    finally:
        await probe.stop()


async def test_a_consumer_commits_no_offset_past_a_transaction_postgres_could_still_lose(infra, cluster):
    """The consumer's batch commits synchronously even when the server's default is asynchronous:
    when the group's offset has moved past a record, that record's effect is durable."""
    pg = cluster(ASYNC_COMMITS)
    bootstrap, topic = infra["kafka"]["bootstrap"], f"test-durable-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, (topic, f"{topic}.dlq"), partitions=1)
    events = [report(f"S{i:03d}") for i in range(20)]
    await produce(bootstrap, topic, [(e.study_id, e.model_dump_json().encode()) for e in events])

    async def apply(conn: psycopg.AsyncConnection, event: Any, _: Any) -> None:
        await conn.execute("INSERT INTO effects VALUES (%s)", (event.event_id,))

    # A plain pool, not services.common.db.open_pool: the consumer must not depend on where its
    # connections come from.
    pool = AsyncConnectionPool(pg.dsn, kwargs={"row_factory": dict_row}, min_size=1, max_size=2, open=False)
    await pool.open(wait=True)
    producer = make_producer(bootstrap)  # the relay is only notified here, never run
    lines = _Lines()
    logging.getLogger("radcurate.delivery").addHandler(lines)
    logging.getLogger("radcurate.delivery").setLevel(logging.INFO)
    group_service = f"test-{topic}"
    consumer = EventConsumer(service=group_service, pool=pool, bootstrap=bootstrap,
                             handlers={topic: Handler(apply=apply)},
                             relay=outbox.OutboxRelay(pool, producer, "test"),
                             session_timeout_ms=2000, heartbeat_interval_ms=300, delivery_log=True)
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        done = f"{group_service} {topic}[0] committed offset {len(events)}"
        deadline = time.monotonic() + 60
        while done not in lines.lines:
            assert time.monotonic() < deadline, f"the consumer never committed offset {len(events)}: {lines.lines}"
            await asyncio.sleep(0.01)
        pg.kill()  # the moment after the offset commit: the worst moment for the database to die
    finally:
        logging.getLogger("radcurate.delivery").removeHandler(lines)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
        await pool.close()
    # The trail says what happened to each record before the kill: applied, then the commit.
    assert [line.split()[-1] for line in lines.lines if "@" in line] == ["applied"] * len(events)
    await asyncio.to_thread(pg.start)

    assert await committed(bootstrap, f"radcurate-{group_service}", TopicPartition(topic, 0)) == len(events)
    assert pg.inbox() == len(events), "the group is past records whose inbox rows Postgres lost"
    assert pg.effects() == len(events), "the group is past records whose effects Postgres lost"


async def test_a_service_connection_commits_durably_whatever_the_server_default(cluster):
    """What a gateway's 201 or an outbox relay's publish relies on: a transaction committed on a
    service's pool (services.common.db.open_pool) is durable once COMMIT returns — and before any
    other session (the relay) can see its rows."""
    pg = cluster(ASYNC_COMMITS)
    pool = await open_pool(pg.dsn)
    try:
        async with pool.connection() as conn:
            async with conn.transaction():
                await conn.execute("INSERT INTO effects VALUES ('stored-then-201')")
        pg.kill()
    finally:
        await pool.close(timeout=1)
    await asyncio.to_thread(pg.start)
    assert pg.effects() == 1, "a commit on a service connection was lost when Postgres was killed"


async def test_the_local_stacks_postgres_loses_no_commit_to_a_kill(cluster):
    """The local stack's cluster (postgres.SETTINGS: fsync off, for speed) keeps every commit of
    any client — CLI, migrations, tests — across a SIGKILL of all its processes."""
    pg = cluster({"wal_writer_delay": "10s"})  # only widens the window, as above
    with psycopg.connect(pg.dsn, autocommit=True) as conn:  # a plain client, no session settings
        conn.execute("INSERT INTO effects VALUES ('committed')")
    pg.kill()
    await asyncio.to_thread(pg.start)
    assert pg.effects() == 1, "the local stack's Postgres lost a commit to a SIGKILL"


async def test_a_batch_cut_short_by_postgres_dying_commits_no_offset(infra, cluster):
    """Postgres dies in the middle of a batch: the record being applied fails on the dead
    connection and is deferred. psycopg then leaves the batch's transaction block without an
    error and without committing; the offset must still not move past the records before it
    (it did: the fault test lost the first records of such batches, synchronous commit or not)."""
    pg = cluster({})  # the local stack's settings: this loss does not depend on them
    bootstrap, topic = infra["kafka"]["bootstrap"], f"test-cut-{uuid.uuid4().hex[:8]}"
    await ensure_topics(bootstrap, (topic, f"{topic}.dlq"), partitions=1)
    events = [report(f"S{i:03d}") for i in range(10)]
    await produce(bootstrap, topic, [(e.study_id, e.model_dump_json().encode()) for e in events])
    killed = asyncio.Event()

    async def apply(conn: psycopg.AsyncConnection, event: Any, _: Any) -> None:
        if event.event_id == events[5].event_id and not killed.is_set():
            pg.kill()  # records 0-4 are applied in this batch's transaction, not yet committed
            killed.set()
        await conn.execute("INSERT INTO effects VALUES (%s)", (event.event_id,))

    pool = AsyncConnectionPool(pg.dsn, kwargs={"row_factory": dict_row}, min_size=1, max_size=2, open=False)
    await pool.open(wait=True)
    producer = make_producer(bootstrap)  # the relay is only notified here, never run
    group_service = f"test-{topic}"
    consumer = EventConsumer(service=group_service, pool=pool, bootstrap=bootstrap,
                             handlers={topic: Handler(apply=apply)},
                             relay=outbox.OutboxRelay(pool, producer, "test"),
                             session_timeout_ms=2000, heartbeat_interval_ms=300, backoff_max_s=2.0)
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(killed.wait(), 60)
        await asyncio.sleep(1.0)  # the consumer finds the connection dead and defers record 5
        await asyncio.to_thread(pg.start)
        deadline = time.monotonic() + 60
        while await committed(bootstrap, f"radcurate-{group_service}", TopicPartition(topic, 0)) != len(events):
            assert time.monotonic() < deadline, "the consumer never got through the batch after the restart"
            await asyncio.sleep(0.5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await consumer.stop()
        await producer.stop()
        await pool.close(timeout=1)
    assert pg.effects() == len(events), "the offset moved past records whose batch never committed"
    assert pg.inbox() == len(events)


async def test_a_unit_of_work_whose_connection_broke_inside_it_does_not_end_as_if_stored(cluster):
    """The same psycopg behaviour behind an HTTP write: a handler that catches an error inside
    its unit of work and carries on must not answer as if its writes were stored."""
    pg = cluster({})
    pool = await open_pool(pg.dsn)
    try:
        with pytest.raises(TransactionNotCommitted):
            async with unit_of_work(pool) as conn:
                await conn.execute("INSERT INTO effects VALUES ('answered-201')")
                pg.kill()
                with contextlib.suppress(psycopg.OperationalError):  # e.g. an optional extra write
                    await conn.execute("INSERT INTO effects VALUES ('extra')")
    finally:
        await pool.close(timeout=1)
    await asyncio.to_thread(pg.start)
    assert pg.effects() == 0
