"""Issue 11, items 1, 2 and 4, against the real broker and Postgres: an oversized event never
blocks an outbox, an outage never dead-letters, and every message — a tombstone, a NUL byte, a
failed commit after a rebalance — has a defined outcome while the consume loop lives on."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from aiokafka.errors import CommitFailedError, IllegalStateError
from prometheus_client import REGISTRY

from services.common import outbox
from services.common.consumer import TransientError
from services.common.db import open_pool, unit_of_work
from services.common.kafka import ensure_topics, make_producer
from tests.integration.test_outbox_and_consumer import Harness, produce, read_topic, record_applied, report, unique

pytestmark = pytest.mark.integration


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def count(h: Harness, sql: str) -> int:
    return await h.count(sql)


# --- item 1: oversized events ------------------------------------------------------------------


async def test_an_oversized_event_is_refused_when_recorded_and_the_transaction_writes_nothing(fresh_schema):
    pool = await open_pool(fresh_schema)
    try:
        big = report("HUGE", report_text="x" * (outbox.MAX_EVENT_BYTES + 1))
        with pytest.raises(outbox.EventTooLarge, match="object store"):
            async with unit_of_work(pool) as conn:
                await outbox.record(conn, [report("SMALL"), big])
        async with pool.connection() as conn:
            assert (await (await conn.execute("SELECT count(*) AS n FROM outbox")).fetchone())["n"] == 0
    finally:
        await pool.close()


async def test_a_row_the_broker_refuses_is_parked_and_the_rows_around_it_are_published(infra, fresh_schema,
                                                                                        fresh_topic):
    bootstrap = infra["kafka"]["bootstrap"]
    await ensure_topics(bootstrap, (fresh_topic,), partitions=1)
    pool = await open_pool(fresh_schema)
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        async with unit_of_work(pool) as conn:
            await outbox.record_raw(conn, fresh_topic, "k", "before", {"n": 1})
            # An over-limit row that got in anyway (recorded before the check, or a broker with a
            # smaller limit than ours): 1.5 MB, more than any Kafka producer sends by default.
            await conn.execute("INSERT INTO outbox (event_id, topic, msg_key, payload) VALUES (%s, %s, %s, %s)",
                               ("poison", fresh_topic, "k", json.dumps({"blob": "y" * 1_500_000})))
            await outbox.record_raw(conn, fresh_topic, "k", "after", {"n": 2})
        parked_before = metric("radcurate_outbox_parked_total", service="test-park", topic=fresh_topic)
        relay = outbox.OutboxRelay(pool, producer, "test-park")
        assert await relay.publish_once() == 3  # each row has an outcome
        assert await relay.publish_once() == 0  # and nothing is retried forever
        async with pool.connection() as conn:
            rows = {r["event_id"]: r for r in await (await conn.execute(
                "SELECT event_id, published_at, parked_at, error FROM outbox")).fetchall()}
        assert rows["before"]["published_at"] and rows["after"]["published_at"]
        assert rows["poison"]["published_at"] is None and rows["poison"]["parked_at"] is not None
        assert "MessageSizeTooLarge" in rows["poison"]["error"]
        assert metric("radcurate_outbox_parked_total", service="test-park", topic=fresh_topic) == parked_before + 1
        await relay.observe_backlog()
        assert metric("radcurate_outbox_parked_events", service="test-park") == 1
        assert metric("radcurate_outbox_backlog_events", service="test-park") == 0
    finally:
        await producer.stop()
        await pool.close()
    seen = await read_topic(bootstrap, fresh_topic, 2)
    assert [m["n"] for m in seen] == [1, 2]


async def test_the_relay_sends_the_recorded_size_not_an_ascii_escaped_copy(infra, fresh_schema, fresh_topic):
    """Emoji are 4 bytes in UTF-8 but 12 as JSON \\u escapes: a 0.5 MB event must not become 1.5 MB."""
    bootstrap = infra["kafka"]["bootstrap"]
    await ensure_topics(bootstrap, (fresh_topic,), partitions=1)
    text = "\N{GRINNING FACE}" * 130_000
    pool = await open_pool(fresh_schema)
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        async with unit_of_work(pool) as conn:
            await outbox.record_raw(conn, fresh_topic, "k", "emoji", {"text": text})
        assert await outbox.OutboxRelay(pool, producer, "test").publish_once() == 1
    finally:
        await producer.stop()
        await pool.close()
    [message] = await read_topic(bootstrap, fresh_topic, 1)
    assert message["text"] == text
    assert len(outbox.encode({"text": text})) <= outbox.MAX_EVENT_BYTES


# --- item 2: transient failures wait, they never dead-letter ----------------------------------


async def test_an_llm_outage_longer_than_the_retries_pauses_the_partition_and_loses_nothing(
        infra, fresh_schema, fresh_topic):
    calls = {"n": 0}
    seen_paused: list[dict] = []

    async def prepare(event):
        calls["n"] += 1
        if calls["n"] <= 7:  # more failures than max_attempts: the endpoint is reloading its model
            raise TransientError("LLM endpoint unavailable")
        return f"labels-for-{event.study_id}"

    async def apply(conn, event, prepared):
        await conn.execute("INSERT INTO applied VALUES (%s, %s)",
                           (event.event_id, prepared.removeprefix("labels-for-")))

    events = [report("L1"), report("L2")]
    async with Harness(infra, fresh_schema, fresh_topic, apply, prepare, backoff_base_s=0.2, backoff_max_s=0.5) as h:
        await produce(h.bootstrap, fresh_topic, [("one-study", e.model_dump_json().encode()) for e in events])

        async def done() -> bool:
            if h.last is not None and h.last.state()["paused"]:
                seen_paused.append(h.last.state())
            return await h.count("SELECT count(*) FROM applied") >= 2

        await h.run_until(done, timeout=40)
        assert await h.count("SELECT count(*) FROM inbox WHERE outcome = 'dead_lettered'") == 0
        assert await h.count("SELECT count(*) FROM outbox") == 0  # no letter queued either
        async with h.pool.connection() as conn:
            order = [r["study_id"] for r in await (await conn.execute("SELECT study_id FROM applied")).fetchall()]
    assert sorted(order) == ["L1", "L2"]
    assert seen_paused and seen_paused[0]["paused"][0]["error"] == "TransientError: LLM endpoint unavailable"
    assert metric("radcurate_consumer_backoffs_total", service=f"test-{fresh_topic}", topic=fresh_topic) >= 1


async def test_a_database_error_that_persists_past_the_retries_is_waited_out_not_dead_lettered(
        infra, fresh_schema, fresh_topic):
    failures = {"n": 0}

    async def flaky(conn, event, _):
        if failures["n"] < 6:
            failures["n"] += 1
            raise ConnectionResetError("server closed the connection unexpectedly")
        await record_applied(conn, event, _)

    async with Harness(infra, fresh_schema, fresh_topic, flaky, backoff_base_s=0.1, backoff_max_s=0.3) as h:
        await produce(h.bootstrap, fresh_topic, [("k", report("D1").model_dump_json().encode())])
        await h.run_until(lambda: _at_least(h, "SELECT count(*) FROM applied", 1))
        assert await h.count("SELECT count(*) FROM applied") == 1
        assert await h.count("SELECT count(*) FROM inbox WHERE outcome = 'dead_lettered'") == 0
    assert failures["n"] == 6


async def test_a_prepare_that_fails_for_good_dead_letters_its_own_error_and_never_applies_none(
        infra, fresh_schema, fresh_topic):
    applied_with: list[Any] = []

    async def prepare(event):
        raise ValueError("the report template is not one we know")

    async def apply(conn, event, prepared):
        applied_with.append(prepared)

    async with Harness(infra, fresh_schema, fresh_topic, apply, prepare) as h:
        await produce(h.bootstrap, fresh_topic, [("k", report("V1").model_dump_json().encode())])
        await h.run_until(lambda: _at_least(h, "SELECT count(*) FROM inbox WHERE outcome = 'dead_lettered'", 1))
        await h.run_until(lambda: _at_least(h, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL", 1), 10)
        [letter] = unique(await read_topic(h.bootstrap, f"{fresh_topic}.dlq", 1))
    assert applied_with == []
    assert letter["error"] == "ValueError: the report template is not one we know"  # not a TypeError about None
    assert letter["attempts"] == 3


# --- item 4: every message has a defined outcome -------------------------------------------------


async def test_tombstones_and_nul_bytes_are_dead_lettered_and_the_partition_moves_on(infra, fresh_schema, fresh_topic):
    raw_nul = b'{"event_type": "ReportIngested", "study_id": "A\x00B"}'
    escaped_nul = report("N\u0000UL")  # valid JSON, valid event; Postgres text refuses it on apply
    nul_event_id = json.loads(report("ID").model_dump_json()) | {"event_id": "evt\u0000id"}
    async with Harness(infra, fresh_schema, fresh_topic, record_applied) as h:
        await produce(h.bootstrap, fresh_topic, [
            ("k", None), ("k", raw_nul), ("k", escaped_nul.model_dump_json().encode()),
            ("k", json.dumps(nul_event_id).encode()), ("k", report("GOOD").model_dump_json().encode())])
        await h.run_until(lambda: _at_least(h, "SELECT count(*) FROM applied", 1))
        assert await h.count("SELECT count(*) FROM inbox WHERE outcome = 'dead_lettered'") == 4
        await h.run_until(lambda: _at_least(h, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL", 4), 10)
        letters = {letter["offset"]: letter
                   for letter in unique(await read_topic(h.bootstrap, f"{fresh_topic}.dlq", 4))}
    assert sorted(letters) == [0, 1, 2, 3]
    assert letters[0]["payload_encoding"] == "tombstone" and "tombstone" in letters[0]["error"]
    assert letters[1]["payload_encoding"] == "base64"
    assert base64.b64decode(letters[1]["payload"]) == raw_nul  # the exact bytes, for a replay
    assert letters[2]["original_event_id"] == escaped_nul.event_id and "NUL" in letters[2]["error"]
    assert "\x00" not in letters[3]["original_event_id"]


async def test_the_dead_letter_of_an_event_at_the_size_limit_still_holds_it_for_a_replay(
        infra, fresh_schema, fresh_topic):
    from services.common.consumer import PermanentError

    async def refuse(conn, event, _):
        raise PermanentError("no rule for this report")

    big = report("BIG", report_text="x" * (outbox.MAX_EVENT_BYTES - 1000))
    assert len(big.model_dump_json()) <= outbox.MAX_EVENT_BYTES
    async with Harness(infra, fresh_schema, fresh_topic, refuse) as h:
        await produce(h.bootstrap, fresh_topic, [("k", big.model_dump_json().encode())])
        await h.run_until(lambda: _at_least(h, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL", 1))
        [letter] = unique(await read_topic(h.bootstrap, f"{fresh_topic}.dlq", 1))
    assert letter["payload_encoding"] == "text" and json.loads(letter["payload"])["event_id"] == big.event_id


async def test_the_consume_loop_outlives_a_failed_commit_and_position_after_a_rebalance(infra, fresh_schema,
                                                                                         fresh_topic):
    async with Harness(infra, fresh_schema, fresh_topic, record_applied) as h:
        consumer = h.consumer()
        client = consumer._consumer
        real_commit, real_position = client.commit, client.position
        faults = {"commit": 0, "position": 0}

        async def commit(*args: Any, **kwargs: Any) -> None:
            if faults["commit"] == 0:
                faults["commit"] += 1
                raise CommitFailedError("the group rebalanced before the commit")
            await real_commit(*args, **kwargs)

        async def position(tp):
            if faults["position"] == 0:
                faults["position"] += 1
                raise IllegalStateError(f"no current assignment for partition {tp}")
            return await real_position(tp)

        client.commit, client.position = commit, position
        await produce(h.bootstrap, fresh_topic, [(f"k{i}", report(f"R{i}").model_dump_json().encode())
                                                 for i in range(10)])
        await h.run_until(lambda: _at_least(h, "SELECT count(*) FROM applied", 10), consumer=consumer)
        assert faults == {"commit": 1, "position": 1}
        assert await h.count("SELECT count(*) FROM applied") == 10
        assert consumer.restarts == 0  # handled in place, no restart needed


async def test_a_consume_loop_whose_kafka_client_breaks_restarts_it_and_carries_on(infra, fresh_schema, fresh_topic):
    async with Harness(infra, fresh_schema, fresh_topic, record_applied, backoff_base_s=0.1) as h:
        consumer = h.consumer()
        broken = consumer._consumer

        async def getmany(*args: Any, **kwargs: Any) -> dict:
            raise RuntimeError("the fetcher task died")

        broken.getmany = getmany
        await produce(h.bootstrap, fresh_topic, [("k", report("X1").model_dump_json().encode())])
        await h.run_until(lambda: _at_least(h, "SELECT count(*) FROM applied", 1), consumer=consumer)
        assert await h.count("SELECT count(*) FROM applied") == 1
        assert consumer.restarts == 1 and consumer._consumer is not broken
        assert "the fetcher task died" in consumer.state()["last_error"]


async def _at_least(h: Harness, sql: str, n: int) -> bool:
    return await h.count(sql) >= n


async def test_the_dead_letter_reader_sees_letters_written_in_the_same_second_as_the_last(infra, fresh_topic):
    """`radcurate dlq list` must show every letter. tansu 0.6.0 answers ListOffsets(latest) from
    the newest batch object's 1-second timestamp, so five one-record batches written within a
    second read as a log of one: a reader that stops at that end misses four letters."""
    from services.common.deadletters import LetterQuery, read_letters

    bootstrap = infra["kafka"]["bootstrap"]
    dlq = f"{fresh_topic}.dlq"
    await ensure_topics(bootstrap, (dlq,), partitions=1)
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        for i in range(5):  # one batch each, as the consumers' dead-letter path sends them
            letter = {"event_id": f"dlq:test:{i}", "original_event_id": f"e{i}", "original_topic": fresh_topic,
                      "partition": 0, "offset": i, "service": "test", "error": "boom", "attempts": 1,
                      "failed_at": f"2026-11-29T00:00:0{i}+00:00", "payload_encoding": "json", "payload": "{}"}
            await producer.send_and_wait(dlq, json.dumps(letter).encode(), key=b"k")
    finally:
        await producer.stop()
    letters = await read_letters(bootstrap, LetterQuery(topic=fresh_topic))
    assert [item["event_id"] for item in letters] == [f"dlq:test:{i}" for i in range(5)]
