"""The consumer's one-transaction batch and its record-by-record fallback, against the real broker
and Postgres: a clean batch takes no savepoint and a fixed number of extra round trips; a batch with
a failing record falls back, and then every guarantee is exact (one effect per event, one dead
letter, no event emitted by the rolled-back attempt, outcome metrics counted once)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import REGISTRY
from psycopg import pq
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from services.common.consumer import EventConsumer, Handler, OneByOne, PermanentError
from tests.integration.test_outbox_and_consumer import Harness, produce, record_applied, report

pytestmark = pytest.mark.integration


async def fetch(consumer: EventConsumer, n: int) -> list[tuple[TopicPartition, list[ConsumerRecord]]]:
    """The first `n` records of the topic, as the broker hands them out (one key: one partition)."""
    await consumer.start()
    batches: list[tuple[TopicPartition, list[ConsumerRecord]]] = []
    for _ in range(40):
        got = await consumer._consumer.getmany(timeout_ms=500)
        batches += list(got.items())
        if sum(len(records) for _, records in batches) >= n:
            return batches
    raise AssertionError(f"fewer than {n} records arrived: {batches}")


async def apply_batches(consumer: EventConsumer, batches: list[tuple[TopicPartition, list[ConsumerRecord]]]) -> None:
    try:
        for tp, records in batches:
            done, deferred = await consumer._apply_batch(tp.topic, records)
            assert (done, deferred) == (len(records), None)
    finally:
        await consumer.stop()


async def traced_pool(dsn: str, trace: Path) -> AsyncConnectionPool:
    """A one-connection pool whose connection writes libpq's protocol trace to `trace`; its commits
    are asynchronous unless the consumer says otherwise (as on a server whose default is off)."""
    async def configure(conn: psycopg.AsyncConnection) -> None:
        await conn.execute("SET synchronous_commit = off")
        await conn.commit()
        conn.pgconn.trace(os.open(trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND))
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)

    pool = AsyncConnectionPool(dsn, min_size=1, max_size=1, kwargs={"row_factory": dict_row}, configure=configure,
                               open=False)
    await pool.open(wait=True)
    return pool


def messages(trace: Path, kind: str) -> list[str]:
    """The trace lines of one message type ('F'rontend or 'B'ackend lines: `<dir> <len> <Type> ...`)."""
    return [line for line in trace.read_text().splitlines() if line.split("\t")[2:3] == [kind]]


def consumed(service: str, topic: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("radcurate_events_consumed_total",
                                     {"service": service, "topic": topic, "outcome": outcome}) or 0.0


async def test_a_clean_batch_is_one_transaction_without_savepoints(infra, fresh_schema, fresh_topic, tmp_path):
    events = [report(f"B{i:03d}") for i in range(30)]
    trace = tmp_path / "libpq.trace"
    async with Harness(infra, fresh_schema, fresh_topic, record_applied) as h:
        await produce(h.bootstrap, fresh_topic, [("one-key", e.model_dump_json().encode()) for e in events])
        consumer = h.consumer()
        batches = await fetch(consumer, len(events))
        consumer._pool = await traced_pool(fresh_schema, trace)
        chunks = [(tp, records[i:i + 10]) for tp, records in batches for i in range(0, len(records), 10)]
        try:
            await apply_batches(consumer, chunks)
            async with consumer._pool.connection() as conn:
                conn.pgconn.untrace()  # flushes the trace
                cur = await conn.execute("SHOW synchronous_commit")
                assert (await cur.fetchone()) == {"synchronous_commit": "on"}
        finally:
            await consumer._pool.close()
        assert await h.count("SELECT count(*) FROM applied") == 30
        assert await h.count("SELECT count(*) FROM inbox WHERE outcome = 'applied'") == 30

    lines = trace.read_text().splitlines()
    assert [line for line in lines if "SAVEPOINT" in line] == [], "a clean batch needs no savepoint"
    # Durable commits are asked for once per connection, not once per batch.
    assert len([line for line in lines if "synchronous_commit" in line and line.startswith("F")]) == 1
    # Round trips (syncs: one ReadyForQuery each) per batch, not per record: the handler here only
    # writes, so its statements travel in the pipeline behind the inbox statement's answer. Main's
    # per-record savepoints, inbox and outbox statements made it 5 per record.
    round_trips = len(messages(trace, "ReadyForQuery"))
    assert round_trips <= 4 * len(chunks), "\n".join(lines[-80:])


@pytest.mark.parametrize("failure", ["raised", "sql"])
async def test_a_failing_record_sends_the_batch_record_by_record_and_every_outcome_stays_exact(
        infra, fresh_schema, fresh_topic, failure):
    # "sql": Postgres refuses BAD's row; in the pipelined batch the error arrives after later
    # statements were sent, and must still roll the whole attempt back.
    with psycopg.connect(fresh_schema, autocommit=True) as conn:
        conn.execute("CREATE TABLE strict (study_id text CHECK (study_id <> 'BAD'))")

    async def apply(conn: psycopg.AsyncConnection, event: Any, prepared: Any) -> list:
        if event.study_id == "BAD" and failure == "raised":
            raise RuntimeError("the database says no to BAD")
        await conn.execute("INSERT INTO strict VALUES (%s)", (event.study_id,))
        await record_applied(conn, event, prepared)
        return [report(f"{event.study_id}-next")]  # a fresh event_id every time apply runs

    g1, bad, g2 = report("G1"), report("BAD"), report("G2")
    sent = [g1, bad, g1, g2, g2]  # G1 and G2 redelivered inside the same batch
    async with Harness(infra, fresh_schema, fresh_topic, apply) as h:
        await produce(h.bootstrap, fresh_topic, [("one-key", e.model_dump_json().encode()) for e in sent])
        consumer = h.consumer()
        service = consumer.service
        before = {o: consumed(service, fresh_topic, o) for o in ("applied", "duplicate", "dead_lettered")}
        fallbacks = REGISTRY.get_sample_value("radcurate_consumer_batch_fallbacks_total",
                                              {"service": service, "topic": fresh_topic}) or 0.0
        await apply_batches(consumer, await fetch(consumer, len(sent)))

        assert await h.count("SELECT count(*) FROM applied") == 2
        assert await h.count("SELECT count(DISTINCT event_id) FROM applied") == 2
        assert await h.count("SELECT count(*) FROM inbox WHERE outcome = 'applied'") == 2
        assert await h.count("SELECT count(*) FROM inbox WHERE outcome = 'dead_lettered'") == 1
        # Only the committed attempt's events: one per applied event, and the one dead letter.
        assert await h.count("SELECT count(*) FROM outbox WHERE right(topic, 4) <> '.dlq'") == 2
        assert await h.count(f"SELECT count(*) FROM outbox WHERE topic = '{fresh_topic}.dlq'") == 1
        assert await h.count(f"SELECT count(*) FROM outbox WHERE topic = '{fresh_topic}.dlq'"
                             f" AND payload->>'original_event_id' = '{bad.event_id}'") == 1
        assert await h.count("SELECT count(*) FROM strict") == 2

    after = {o: consumed(service, fresh_topic, o) - before[o] for o in before}
    assert after == {"applied": 2, "duplicate": 2, "dead_lettered": 1}
    assert REGISTRY.get_sample_value("radcurate_consumer_batch_fallbacks_total",
                                     {"service": service, "topic": fresh_topic}) == fallbacks + 1


async def test_a_redelivered_clean_batch_is_all_duplicates_and_emits_nothing_twice(infra, fresh_schema, fresh_topic):
    async def apply(conn: psycopg.AsyncConnection, event: Any, prepared: Any) -> list:
        await record_applied(conn, event, prepared)
        return [report(f"{event.study_id}-next")]

    events = [report(f"R{i:02d}") for i in range(10)]
    payloads = [("one-key", e.model_dump_json().encode()) for e in events]
    async with Harness(infra, fresh_schema, fresh_topic, apply) as h:
        await produce(h.bootstrap, fresh_topic, payloads + payloads)
        consumer = h.consumer()
        await apply_batches(consumer, await fetch(consumer, 20))
        assert await h.count("SELECT count(*) FROM applied") == 10
        assert await h.count("SELECT count(*) FROM outbox WHERE right(topic, 4) <> '.dlq'") == 10
        assert consumed(consumer.service, fresh_topic, "duplicate") == 10
        assert REGISTRY.get_sample_value("radcurate_consumer_batch_fallbacks_total",
                                         {"service": consumer.service, "topic": fresh_topic}) is None


@pytest.mark.parametrize("batch_outcome", ["applied", "fails on BAD", "one by one"])
async def test_a_batch_level_handler_gets_the_batchs_new_events_at_once_and_falls_back_record_by_record(
        infra, fresh_schema, fresh_topic, batch_outcome):
    """`Handler.apply_many` gets every new event of a clean batch in one call (the inbox has removed
    the copies); when it fails, or leaves the batch to `apply` (`OneByOne`), the batch rolls back
    whole and runs record by record, where a poison record is dead-lettered alone."""
    calls: list[list[str]] = []
    one_by_one: list[str] = []

    async def apply(conn: psycopg.AsyncConnection, event: Any, prepared: Any) -> list:
        one_by_one.append(event.study_id)
        if event.study_id == "BAD":
            raise PermanentError("BAD is refused")
        await record_applied(conn, event, prepared)
        return [report(f"{event.study_id}-next")]

    async def apply_many(conn: psycopg.AsyncConnection, events: list[Any], prepared: list[Any]) -> list:
        calls.append([e.study_id for e in events])
        await conn.execute("INSERT INTO applied SELECT * FROM unnest(%s::text[], %s::text[])",
                           ([e.event_id for e in events], [e.study_id for e in events]))
        if batch_outcome == "fails on BAD" and any(e.study_id == "BAD" for e in events):
            raise RuntimeError("the batch says no to BAD")
        if batch_outcome == "one by one":
            raise OneByOne
        return [report(f"{e.study_id}-next") for e in events]

    g1, g2, g3 = report("G1"), report("G2"), report("G3")
    sent = [g1, g2, g1, g3, g2] + ([report("BAD")] if batch_outcome == "fails on BAD" else [])
    async with Harness(infra, fresh_schema, fresh_topic, apply) as h:
        await produce(h.bootstrap, fresh_topic, [("one-key", e.model_dump_json().encode()) for e in sent])
        consumer = h.consumer()
        consumer._handlers[fresh_topic] = Handler(apply=apply, apply_many=apply_many)
        service = consumer.service
        fallbacks = REGISTRY.get_sample_value("radcurate_consumer_batch_fallbacks_total",
                                              {"service": service, "topic": fresh_topic}) or 0.0
        batches = await fetch(consumer, len(sent))
        await apply_batches(consumer, [(tp, records) for tp, records in batches])

        assert calls and all(len(c) == len(set(c)) for c in calls), calls  # copies never reach it
        assert sorted(s for c in calls for s in c) == sorted({e.study_id for e in sent})
        assert await h.count("SELECT count(*) FROM applied") == 3  # each good event once
        assert await h.count("SELECT count(DISTINCT study_id) FROM applied") == 3
        assert await h.count("SELECT count(*) FROM outbox WHERE right(topic, 4) <> '.dlq'") == 3
        assert await h.count(f"SELECT count(*) FROM outbox WHERE topic = '{fresh_topic}.dlq'") == (
            1 if batch_outcome == "fails on BAD" else 0)
        assert await h.count("SELECT count(*) FROM inbox WHERE outcome = 'applied'") == 3

    assert consumed(service, fresh_topic, "duplicate") == 2
    if batch_outcome == "applied":
        assert one_by_one == []
    else:
        assert sorted(one_by_one) == sorted({e.study_id for e in sent})
    assert REGISTRY.get_sample_value("radcurate_consumer_batch_fallbacks_total",
                                     {"service": service, "topic": fresh_topic}) == (
        fallbacks + 1 if batch_outcome == "fails on BAD" else (fallbacks or None))


async def two_partitions(consumer: EventConsumer, sent: list[Any]) -> dict[TopicPartition, list[ConsumerRecord]]:
    """The records of `sent` (one key each) as one poll would bring them: a batch per partition,
    and the harness's topic has two, each holding some of them."""
    batches: dict[TopicPartition, list[ConsumerRecord]] = {}
    for tp, records in await fetch(consumer, len(sent)):
        batches.setdefault(tp, []).extend(records)
    assert len(batches) == 2, "the keys should fall on both partitions"
    return batches


async def poll_once_with(consumer: EventConsumer, batches: dict[TopicPartition, list[ConsumerRecord]]) -> None:
    """One `_poll_once` whose fetch brings `batches` at once, as a producer's round lands on every
    partition of its topic together."""
    async def getmany(*_: Any, **__: Any) -> dict[TopicPartition, list[ConsumerRecord]]:
        return batches

    real, consumer._consumer.getmany = consumer._consumer.getmany, getmany  # type: ignore[method-assign]
    try:
        await consumer._poll_once()
    finally:
        consumer._consumer.getmany = real  # type: ignore[method-assign]


async def test_one_polls_batches_of_one_topic_from_several_partitions_are_one_transaction(
        infra, fresh_schema, fresh_topic, tmp_path):
    """A producer's round lands on every partition at once; applying each partition's batch in its
    own transaction paid its round trips, its synchronous commit and the handler's fixed
    statements once per partition. One transaction now, every partition's offset committed after it."""
    calls: list[list[str]] = []

    async def apply_many(conn: psycopg.AsyncConnection, events: list[Any], prepared: list[Any]) -> list:
        calls.append([e.study_id for e in events])
        await conn.execute("INSERT INTO applied SELECT * FROM unnest(%s::text[], %s::text[])",
                           ([e.event_id for e in events], [e.study_id for e in events]))
        return [report(f"{e.study_id}-next") for e in events]

    sent = [report(f"P{i:02d}") for i in range(20)]
    trace = tmp_path / "libpq.trace"
    async with Harness(infra, fresh_schema, fresh_topic, record_applied) as h:
        await produce(h.bootstrap, fresh_topic, [(e.study_id, e.model_dump_json().encode()) for e in sent])
        consumer = h.consumer()
        consumer._handlers[fresh_topic] = Handler(apply=record_applied, apply_many=apply_many)
        batches = await two_partitions(consumer, sent)
        pool, consumer._pool = consumer._pool, await traced_pool(fresh_schema, trace)
        try:
            await poll_once_with(consumer, batches)
            async with consumer._pool.connection() as conn:
                conn.pgconn.untrace()  # flushes the trace
            if consumer._committing is not None:
                await consumer._committing
            committed = {tp: await consumer._consumer.committed(tp) for tp in batches}
        finally:
            await consumer._pool.close()
            consumer._pool = pool
            await consumer.stop()
        assert await h.count("SELECT count(*) FROM applied") == 20
        assert await h.count("SELECT count(*) FROM outbox") == 20

    # One call with both partitions' events, each partition's in its order.
    assert len(calls) == 1, calls
    for records in batches.values():
        mine = [r.key.decode() for r in records]
        assert [s for s in calls[0] if s in mine] == mine
    assert len([line for line in trace.read_text().splitlines()
                if line.startswith("F") and "COMMIT" in line]) == 1
    assert committed == {tp: records[-1].offset + 1 for tp, records in batches.items()}


async def test_a_failing_record_in_one_partition_sends_each_partition_its_own_way(infra, fresh_schema, fresh_topic):
    """When the one transaction of several partitions' batches fails, nothing of it stays; each
    partition's batch then runs as before: the clean one in one transaction, the other record by
    record, the poison record dead-lettered alone."""
    calls: list[list[str]] = []

    async def apply(conn: psycopg.AsyncConnection, event: Any, prepared: Any) -> list:
        if event.study_id == "BAD":
            raise PermanentError("BAD is refused")
        await record_applied(conn, event, prepared)
        return [report(f"{event.study_id}-next")]

    async def apply_many(conn: psycopg.AsyncConnection, events: list[Any], prepared: list[Any]) -> list:
        calls.append([e.study_id for e in events])
        if any(e.study_id == "BAD" for e in events):
            raise RuntimeError("the batch says no to BAD")
        for event in events:
            await record_applied(conn, event, None)
        return [report(f"{e.study_id}-next") for e in events]

    sent = [report(f"F{i:02d}") for i in range(12)] + [report("BAD")]
    async with Harness(infra, fresh_schema, fresh_topic, apply) as h:
        await produce(h.bootstrap, fresh_topic, [(e.study_id, e.model_dump_json().encode()) for e in sent])
        consumer = h.consumer()
        consumer._handlers[fresh_topic] = Handler(apply=apply, apply_many=apply_many)
        service = consumer.service
        fallbacks = REGISTRY.get_sample_value("radcurate_consumer_batch_fallbacks_total",
                                              {"service": service, "topic": fresh_topic}) or 0.0
        batches = await two_partitions(consumer, sent)
        try:
            await poll_once_with(consumer, batches)
            if consumer._committing is not None:
                await consumer._committing
            committed = {tp: await consumer._consumer.committed(tp) for tp in batches}
        finally:
            await consumer.stop()
        assert await h.count("SELECT count(*) FROM applied") == 12
        assert await h.count("SELECT count(DISTINCT study_id) FROM applied") == 12
        assert await h.count("SELECT count(*) FROM outbox WHERE right(topic, 4) <> '.dlq'") == 12
        assert await h.count(f"SELECT count(*) FROM outbox WHERE topic = '{fresh_topic}.dlq'") == 1
        assert await h.count("SELECT count(*) FROM inbox WHERE outcome = 'applied'") == 12

    assert committed == {tp: records[-1].offset + 1 for tp, records in batches.items()}
    assert len(calls[0]) == len(sent)  # tried together first
    # then BAD's partition failed alone (counted with the first try), the clean one went through
    assert REGISTRY.get_sample_value("radcurate_consumer_batch_fallbacks_total",
                                     {"service": service, "topic": fresh_topic}) == fallbacks + 2


async def test_a_batch_that_emits_nothing_does_not_wake_the_relay(infra, fresh_schema, fresh_topic):
    """The sampler's batches of votes and the gateway's of decisions emit nothing: waking the relay
    after each ran a round (a transaction) that found no row. A batch that emits still wakes it."""
    async def emit_for_asks(conn: psycopg.AsyncConnection, event: Any, prepared: Any) -> list:
        await record_applied(conn, event, prepared)
        return [report(f"ANSWER-{event.study_id}")] if event.study_id.startswith("ASK") else []

    async with Harness(infra, fresh_schema, fresh_topic, emit_for_asks) as h:
        await produce(h.bootstrap, fresh_topic, [(s, report(s).model_dump_json().encode()) for s in ("READ", "ASK")])
        consumer = h.consumer()
        batches = await fetch(consumer, 2)
        try:
            for tp, records in batches:
                for record in records:
                    h.relay._wake.clear()
                    await consumer._process_partition_batch(tp, [record], recorded_before=consumer._recorded)
                    assert h.relay._wake.is_set() == record.key.startswith(b"ASK"), record.key
        finally:
            await consumer.stop()
        assert await h.count("SELECT count(*) FROM applied") == 2
