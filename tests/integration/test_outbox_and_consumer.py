"""The delivery guarantees, against the real broker and Postgres: outbox, inbox, retries, DLQ."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from services.common import outbox
from services.common.consumer import EventConsumer, Handler, PermanentError
from services.common.contracts import ObjectsManifest, Protocol, ReportIngested
from services.common.db import open_pool, unit_of_work
from services.common.kafka import ensure_topics, make_producer

pytestmark = pytest.mark.integration


def report(study_id: str, **kw: Any) -> ReportIngested:
    fields = {"report_text": "No acute cardiopulmonary process.", "objects_manifest": ObjectsManifest(), **kw}
    return ReportIngested(study_id=study_id, patient_id=f"P-{study_id}", study_instance_uid=f"1.2.{len(study_id)}",
                          **{"protocol": Protocol.CXR, **fields})


async def produce(bootstrap: str, topic: str, payloads: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for key, value in payloads:
            await producer.send_and_wait(topic, key=key.encode(), value=value)
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 20) -> list[dict]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    out: list[dict] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(out) < expected and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                out += [json.loads(r.value) | {"_key": r.key.decode(), "_raw": r.value} for r in records]
    finally:
        await consumer.stop()
    return out


class Harness:
    """A consumer with one handler on a fresh topic, writing to a fresh schema."""

    def __init__(self, infra: dict, dsn: str, topic: str, apply, prepare=None, **consumer_kwargs: Any) -> None:
        self.bootstrap = infra["kafka"]["bootstrap"]
        self.dsn, self.topic, self._apply, self._prepare = dsn, topic, apply, prepare
        self._consumer_kwargs = consumer_kwargs
        self.last: EventConsumer | None = None
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> Harness:
        await ensure_topics(self.bootstrap, (self.topic, f"{self.topic}.dlq"), partitions=2)
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS applied (event_id text, study_id text)")
        self.pool = await open_pool(self.dsn)
        self.producer = make_producer(self.bootstrap)
        await self.producer.start()
        self.relay = outbox.OutboxRelay(self.pool, self.producer, "test", poll_seconds=0.1)
        return self

    def consumer(self) -> EventConsumer:
        kwargs = {"max_attempts": 3, **self._consumer_kwargs}
        self.last = EventConsumer(service=f"test-{self.topic}", pool=self.pool, bootstrap=self.bootstrap,
                                  handlers={self.topic: Handler(apply=self._apply, prepare=self._prepare)},
                                  relay=self.relay, session_timeout_ms=2000, heartbeat_interval_ms=300, **kwargs)
        return self.last

    async def run_until(self, condition, timeout: float = 30, consumer: EventConsumer | None = None) -> None:
        consumer = consumer or self.consumer()
        await consumer.start()
        self.task = asyncio.create_task(consumer.run())
        tasks = [self.task, asyncio.create_task(self.relay.run())]
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            while not await condition() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.2)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await consumer.stop()

    async def count(self, sql: str) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(sql)
            return list((await cur.fetchone()).values())[0]

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()
        await self.pool.close()


async def record_applied(conn: psycopg.AsyncConnection, event: ReportIngested, _: Any) -> None:
    await conn.execute("INSERT INTO applied VALUES (%s, %s)", (event.event_id, event.study_id))


async def test_each_event_takes_effect_once_even_when_delivered_twice(infra, fresh_schema, fresh_topic):
    events = [report(f"S{i:03d}") for i in range(40)]
    payloads = [(e.study_id, e.model_dump_json().encode()) for e in events]
    async with Harness(infra, fresh_schema, fresh_topic, record_applied) as h:
        await produce(h.bootstrap, fresh_topic, payloads + payloads[:15])  # at-least-once: 15 redelivered
        await h.run_until(lambda: _at_least(h, "SELECT count(*) FROM inbox", 40))
        await asyncio.sleep(0.5)
        assert await h.count("SELECT count(*) FROM applied") == 40
        assert await h.count("SELECT count(DISTINCT event_id) FROM applied") == 40


async def test_a_replayed_batch_after_a_crash_before_the_offset_commit_changes_nothing(infra, fresh_schema,
                                                                                       fresh_topic):
    events = [report(f"C{i:03d}") for i in range(20)]
    async with Harness(infra, fresh_schema, fresh_topic, record_applied) as h:
        await produce(h.bootstrap, fresh_topic, [(e.study_id, e.model_dump_json().encode()) for e in events])
        # First life: apply the records but "crash" before committing any offset.
        crashed = h.consumer()
        await crashed.start()
        try:
            fetched = 0
            for _ in range(20):
                batch = await crashed._consumer.getmany(timeout_ms=500)
                for tp, records in batch.items():
                    await crashed._apply_batch(tp.topic, records)
                    fetched += len(records)
                if fetched >= 20:
                    break
        finally:
            await crashed._consumer.stop()  # leaves without committing
        assert await h.count("SELECT count(*) FROM applied") == 20
        # Second life: the whole log is redelivered; the inbox turns it into no-ops.
        await h.run_until(lambda: _committed_through(h, 20))
        assert await h.count("SELECT count(*) FROM applied") == 20


async def test_an_event_that_keeps_failing_goes_to_the_dead_letter_topic_and_the_rest_flow_on(infra, fresh_schema,
                                                                                               fresh_topic):
    async def apply(conn, event, _):
        if event.study_id == "BAD":
            raise RuntimeError("the database says no to BAD")
        await record_applied(conn, event, _)

    events = [report("G1"), report("BAD"), report("G2")]
    async with Harness(infra, fresh_schema, fresh_topic, apply) as h:
        await produce(h.bootstrap, fresh_topic, [("same-key", e.model_dump_json().encode()) for e in events])
        await h.run_until(lambda: _at_least(h, "SELECT count(*) FROM inbox", 3))
        assert await h.count("SELECT count(*) FROM applied") == 2
        assert await h.count("SELECT count(*) FROM inbox WHERE outcome = 'dead_lettered'") == 1
        await h.run_until(lambda: _at_least(h, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL", 1), 10)
        letters = unique(await read_topic(h.bootstrap, f"{fresh_topic}.dlq", 1))
    assert len(letters) == 1  # delivery is at-least-once: a re-sent letter has the same event_id
    letter = letters[0]
    assert letter["original_event_id"] == events[1].event_id
    assert "the database says no to BAD" in letter["error"]
    assert letter["attempts"] == 3
    assert json.loads(letter["payload"])["study_id"] == "BAD"


async def test_a_transient_failure_is_retried_and_then_applied(infra, fresh_schema, fresh_topic):
    failures = {"n": 0}

    async def flaky(conn, event, _):
        if failures["n"] < 2:
            failures["n"] += 1
            raise ConnectionError("blip")
        await record_applied(conn, event, _)

    async with Harness(infra, fresh_schema, fresh_topic, flaky) as h:
        await produce(h.bootstrap, fresh_topic, [("k", report("T1").model_dump_json().encode())])
        await h.run_until(lambda: _at_least(h, "SELECT count(*) FROM inbox", 1))
        assert await h.count("SELECT count(*) FROM applied") == 1
        assert await h.count("SELECT count(*) FROM inbox WHERE outcome = 'dead_lettered'") == 0


async def test_undecodable_and_unknown_messages_are_dead_lettered_with_the_reason(infra, fresh_schema, fresh_topic):
    async def permanent(conn, event, _):
        raise PermanentError("not for me")

    async with Harness(infra, fresh_schema, fresh_topic, permanent) as h:
        await produce(h.bootstrap, fresh_topic, [
            ("k1", b"{not json"), ("k2", json.dumps({"event_type": "Nope"}).encode()),
            ("k3", report("P1").model_dump_json().encode())])
        await h.run_until(lambda: _at_least(h, "SELECT count(*) FROM inbox WHERE outcome = 'dead_lettered'", 3))
        await h.run_until(lambda: _at_least(h, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL", 3), 10)
        letters = unique(await read_topic(h.bootstrap, f"{fresh_topic}.dlq", 3))
    errors = sorted(letter["error"] for letter in letters)
    assert len(errors) == 3
    assert any("cannot decode" in e and "Nope" in e for e in errors)
    assert any("cannot decode" in e and "Expecting property name" in e for e in errors)
    assert any("PermanentError: not for me" in e for e in errors)
    assert all(letter["attempts"] <= 1 for letter in letters)  # permanent: no pointless retries


async def test_the_relay_publishes_only_committed_events_in_order_keyed_by_study(infra, fresh_schema, fresh_topic):
    from services.common.contracts import Topic

    committed = [report("R1"), report("R1"), report("R2")]
    pool = await open_pool(fresh_schema)
    producer = make_producer(infra["kafka"]["bootstrap"])
    await producer.start()
    try:
        with pytest.raises(RuntimeError):
            async with unit_of_work(pool) as conn:
                await outbox.record(conn, [report("ROLLED-BACK")])
                raise RuntimeError("the state change failed")
        async with unit_of_work(pool) as conn:
            await outbox.record(conn, committed)
        relay = outbox.OutboxRelay(pool, producer, "test")
        assert await relay.publish_once() == 3
        assert await relay.publish_once() == 0  # nothing is sent twice
    finally:
        await producer.stop()
        await pool.close()
    seen = await read_topic(infra["kafka"]["bootstrap"], Topic.REPORT_INGESTED.value, 10 ** 6, timeout=4)
    ours = [m for m in seen if m["event_id"] in {e.event_id for e in committed} or m["study_id"] == "ROLLED-BACK"]
    assert sorted(m["event_id"] for m in ours) == sorted(e.event_id for e in committed)
    assert all(m["_key"] == m["study_id"] for m in ours)
    # The body is the event's JSON exactly as recorded (the outbox keeps it as json text)
    assert {m["event_id"]: m["_raw"] for m in ours} == {e.event_id: e.model_dump_json().encode() for e in committed}
    # Order is promised per study (one key, one partition), not across studies.
    assert [m["event_id"] for m in ours if m["study_id"] == "R1"] == [e.event_id for e in committed[:2]]


async def test_the_relay_lingers_only_while_events_keep_coming(infra, fresh_schema):
    """The first event after a quiet spell goes out at once; events that follow a round within the
    linger wait for company while commits keep coming (one produce request for all of them), and
    go once no commit came for the quiet gap, not after the rest of the linger."""
    pool = await open_pool(fresh_schema)
    producer = make_producer(infra["kafka"]["bootstrap"])
    await producer.start()
    relay = outbox.OutboxRelay(pool, producer, "test", poll_seconds=60, linger_seconds=30, quiet_seconds=2)
    running = asyncio.create_task(relay.run())

    async def published() -> list[tuple[str, Any]]:
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT msg_key, published_at FROM outbox WHERE published_at IS NOT NULL")
            return [(r["msg_key"], r["published_at"]) for r in await cur.fetchall()]

    async def record_one(study_id: str) -> None:
        async with unit_of_work(pool) as conn:
            await outbox.record(conn, [report(study_id)])
        relay.notify()

    async def published_within(n: int, seconds: float) -> list[tuple[str, Any]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while len(rows := await published()) < n and loop.time() < deadline:
            await asyncio.sleep(0.05)
        return rows

    try:
        await asyncio.sleep(0.5)  # the relay's first round (nothing to send) is behind it
        await record_one("QUIET")
        assert len(await published_within(1, 10)) == 1  # well within the 30 s linger the old relay waited out
        loop = asyncio.get_running_loop()
        for i in range(8):  # a stream: every commit within the 2 s quiet gap of the one before
            await record_one(f"BUSY{i}")
            await asyncio.sleep(0.2)
        assert len(await published()) == 1  # while events keep coming, they wait for company
        stream_ended = loop.time()
        rows = await published_within(9, 20)
        waited = loop.time() - stream_ended
        busy = [at for key, at in rows if key.startswith("BUSY")]
        assert len(busy) == 8
        assert len(set(busy)) == 1  # one round (one UPDATE, one now()) sent the whole stream
        assert waited < 15  # the quiet gap after the last commit, far from the 30 s linger
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await producer.stop()
        await pool.close()


async def test_a_lone_command_goes_at_once_even_within_the_linger_and_the_quiet_gap(infra, fresh_schema):
    """A release or sampling request right after a stream of votes (within the linger of the
    votes' last round) is sent at once with `notify(at_once=True)`, along with what is waiting,
    instead of waiting out the quiet gap for company that is not coming."""
    pool = await open_pool(fresh_schema)
    producer = make_producer(infra["kafka"]["bootstrap"])
    await producer.start()
    relay = outbox.OutboxRelay(pool, producer, "test", poll_seconds=60, linger_seconds=60, quiet_seconds=20)
    running = asyncio.create_task(relay.run())

    async def unpublished() -> set[str]:
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT msg_key FROM outbox WHERE published_at IS NULL")
            return {r["msg_key"] for r in await cur.fetchall()}

    async def record_one(study_id: str, at_once: bool = False) -> None:
        async with unit_of_work(pool) as conn:
            await outbox.record(conn, [report(study_id)])
        relay.notify(at_once=at_once)

    async def all_sent_within(seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while await unpublished() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        return not await unpublished()

    try:
        await asyncio.sleep(0.5)  # the relay's first round (nothing to send) is behind it
        await record_one("FIRST")  # after a quiet spell: at once, and it starts the linger
        assert await all_sent_within(10)
        await record_one("VOTE")  # within the linger: waits the 20 s quiet gap for company
        await asyncio.sleep(1)
        assert await unpublished() == {"VOTE"}
        await record_one("RELEASE", at_once=True)
        assert await all_sent_within(10)  # both, far sooner than the 20 s quiet gap
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await producer.stop()
        await pool.close()


async def test_what_a_drained_batch_emits_goes_at_once_and_a_silent_batch_leaves_the_linger_alone(
        infra, fresh_schema, fresh_topic):
    """A consumer batch that held the last records the broker had, and emitted events, sends them
    at once (the decision after a campaign's last vote), with what waits in the outbox; a batch that
    emitted nothing (the gateway's read model) does not cut the votes' linger short."""

    async def answer_asks(conn: psycopg.AsyncConnection, event: ReportIngested, _: Any) -> list[ReportIngested]:
        await record_applied(conn, event, None)
        return [report(f"ANSWER-{event.study_id}")] if event.study_id.startswith("ASK") else []

    async with Harness(infra, fresh_schema, fresh_topic, answer_asks) as h:
        # A 60 s linger and a 20 s quiet gap: anything that waits for them fails the bounds below.
        h.relay = outbox.OutboxRelay(h.pool, h.producer, "test", poll_seconds=60, linger_seconds=60,
                                     quiet_seconds=20)
        consumer = h.consumer()
        await consumer.start()
        tasks = [asyncio.create_task(consumer.run()), asyncio.create_task(h.relay.run())]
        loop = asyncio.get_running_loop()

        async def unpublished() -> set[str]:
            async with h.pool.connection() as conn:
                cur = await conn.execute("SELECT msg_key FROM outbox WHERE published_at IS NULL")
                return {r["msg_key"] for r in await cur.fetchall()}

        async def until(check, seconds: float) -> bool:
            deadline = loop.time() + seconds
            while not await check() and loop.time() < deadline:
                await asyncio.sleep(0.05)
            return await check()

        async def vote(study_id: str) -> None:
            async with unit_of_work(h.pool) as conn:
                await outbox.record(conn, [report(study_id)])
            h.relay.notify()

        async def applied(n: int) -> bool:
            return await h.count("SELECT count(*) FROM applied") >= n

        try:
            await asyncio.sleep(0.5)  # the relay's first round (nothing to send) is behind it
            await vote("FIRST")  # after a quiet spell: at once, and it starts the linger
            assert await until(lambda: _none(unpublished), 10)
            await vote("VOTE")  # within the linger: waits the 20 s quiet gap for company
            await produce(h.bootstrap, fresh_topic, [("READ", report("READ").model_dump_json().encode())])
            assert await until(lambda: applied(1), 15)
            await asyncio.sleep(1)
            assert await unpublished() == {"VOTE"}  # a batch that emitted nothing: the vote still waits
            await produce(h.bootstrap, fresh_topic, [("ASK", report("ASK").model_dump_json().encode())])
            started = loop.time()
            assert await until(lambda: applied(2), 15)
            # the answer and the waiting vote, far sooner than the 20 s quiet gap the relay held
            assert await until(lambda: _none(unpublished), 10), await unpublished()
            assert loop.time() - started < 12
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await consumer.stop()


async def _none(rows) -> bool:
    return not await rows()


def unique(letters: list[dict]) -> list[dict]:
    return list({letter["event_id"]: letter for letter in letters}.values())


async def _at_least(h: Harness, sql: str, n: int) -> bool:
    return await h.count(sql) >= n


async def _committed_through(h: Harness, n: int) -> bool:
    consumer = AIOKafkaConsumer(bootstrap_servers=h.bootstrap, group_id=f"radcurate-test-{h.topic}",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        from aiokafka import TopicPartition

        parts = consumer.partitions_for_topic(h.topic) or set()
        offsets = [await consumer.committed(TopicPartition(h.topic, p)) for p in parts]
        return sum(o or 0 for o in offsets) >= n
    finally:
        await consumer.stop()


async def test_a_unit_of_works_events_are_one_outbox_statement_in_their_order(infra, fresh_schema):
    """record() writes any number of events with one INSERT (not one per event), ids in the order
    given, a repeated event_id skipped; record_raw() keeps its headers as a JSON object."""
    events = [report(f"S{i % 7}") for i in range(120)]
    events.insert(60, events[3])  # the same event twice in one call: stored once
    pool = await open_pool(fresh_schema)
    try:
        async with unit_of_work(pool) as conn:
            statements: list[str] = []
            cur_exec = conn.execute

            async def counting(query: Any, params: Any = None, **kw: Any) -> Any:
                statements.append(str(query))
                return await cur_exec(query, params, **kw)

            conn.execute = counting  # type: ignore[method-assign]
            await outbox.record(conn, events)
            conn.execute = cur_exec  # type: ignore[method-assign]
            await outbox.record_raw(conn, "t.dlq", "k", "raw-1", {"a": "é"}, headers={"x-replay": "r1"})
        async with pool.connection() as conn:
            rows = await (await conn.execute("SELECT event_id, payload, headers FROM outbox ORDER BY id")).fetchall()
    finally:
        await pool.close()
    assert len(statements) == 1 and statements[0].lstrip().upper().startswith("INSERT INTO OUTBOX")
    unique = list(dict.fromkeys(e.event_id for e in events))
    assert [r["event_id"] for r in rows] == [*unique, "raw-1"]
    assert rows[0]["payload"] == json.loads(events[0].model_dump_json())
    assert rows[-1]["payload"] == {"a": "é"} and rows[-1]["headers"] == {"x-replay": "r1"}
    assert all(r["headers"] is None for r in rows[:-1])


async def test_the_next_batch_does_not_wait_for_the_offset_commit_before_it(infra, fresh_schema, fresh_topic):
    """An offset commit is a broker round trip (tansu writes it to its store). The consume loop goes
    on to the next batch while one is unanswered, and the offsets still reach the broker, in order,
    once it answers; stopping the consumer sends what is left."""
    async with Harness(infra, fresh_schema, fresh_topic, record_applied) as h:
        consumer = h.consumer()
        client = consumer._consumer
        real_commit = client.commit
        answer = asyncio.Event()
        asked: list[dict] = []

        async def commit(offsets: dict) -> None:
            asked.append(dict(offsets))
            await answer.wait()  # the broker has not answered yet
            await real_commit(offsets)

        client.commit = commit
        await produce(h.bootstrap, fresh_topic, [("k0", report("R0").model_dump_json().encode())])
        more = False

        async def all_applied() -> bool:
            nonlocal more
            n = await h.count("SELECT count(*) FROM applied")
            if n == 1 and not more:  # the first batch applied; its offset commit waits for `answer`
                more = True
                await produce(h.bootstrap, fresh_topic, [(f"k{i}", report(f"R{i}").model_dump_json().encode())
                                                         for i in range(1, 5)])
            if n < 5:
                return False
            answer.set()
            return True

        await h.run_until(all_applied, timeout=20, consumer=consumer)
        assert await h.count("SELECT count(*) FROM applied") == 5
        assert asked and answer.is_set()
        assert await _committed_through(h, 5)  # every offset committed, the last ones at stop


async def test_the_relays_poll_finds_an_empty_outbox_in_one_round_trip_and_a_waiting_row_still_goes(
        infra, fresh_schema, tmp_path):
    """The relay polls every `poll_seconds` in every service, idle or between rounds, and nearly
    always finds nothing: that look is one autocommit statement (one round trip), where the locking
    read's transaction took three (BEGIN, the read, COMMIT). A row it finds still goes out."""
    from psycopg import pq

    trace = tmp_path / "libpq.trace"

    async def configure(conn: psycopg.AsyncConnection) -> None:
        conn.pgconn.trace(os.open(trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND))
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)

    pool = AsyncConnectionPool(fresh_schema, min_size=1, max_size=1, kwargs={"row_factory": dict_row},
                               configure=configure, open=False)
    await pool.open(wait=True)
    producer = make_producer(infra["kafka"]["bootstrap"])
    await producer.start()
    try:
        relay = outbox.OutboxRelay(pool, producer, "test")
        assert await relay.publish_once(probe=True) == 0
        async with pool.connection() as conn:
            conn.pgconn.untrace()  # flushes the trace
        syncs = [line for line in trace.read_text().splitlines() if line.split("\t")[2:3] == ["ReadyForQuery"]]
        assert len(syncs) == 1, trace.read_text()
        async with unit_of_work(pool) as conn:
            await outbox.record(conn, [report("PROBED")])
        assert await relay.publish_once(probe=True) == 1
        assert await relay.publish_once(probe=True) == 0
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
            assert (await cur.fetchone())["n"] == 0
            assert conn.info.transaction_status == pq.TransactionStatus.INTRANS  # the pool's mode is kept
    finally:
        await producer.stop()
        await pool.close()
