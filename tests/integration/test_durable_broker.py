"""The broker's log in the local S3 server loses no acknowledged message: several producers write
one partition at once (tansu claims each offset range with an `If-Match` PUT on the partition's
watermark); then the whole stack stops and starts again (`down` / `up`); then more producers,
during which the S3 server is SIGKILLed and restarted; then every acknowledged message must be
read back exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from radcurate.stack import local
from radcurate.stack.procs import alive

pytestmark = pytest.mark.integration

PRODUCERS = 4
PER_PRODUCER = 250  # per phase: 2 phases x 4 producers x 250 = 2,000 messages
IN_FLIGHT = 5  # per producer: small batches, so each one is its own offset claim


async def create_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, name: str, count: int) -> tuple[list[str], int]:
    """Send `count` messages to partition 0, a few in flight at a time, so that the producers'
    requests interleave on the broker; returns the acknowledged messages and the failures."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False,
                                linger_ms=0, request_timeout_ms=20000)
    await producer.start()
    values = [f"{name}-{i}" for i in range(count)]
    results: list = []
    try:
        for start in range(0, count, IN_FLIGHT):
            futures = [await producer.send(topic, value=v.encode(), partition=0)
                       for v in values[start:start + IN_FLIGHT]]
            results += await asyncio.gather(*futures, return_exceptions=True)
    finally:
        await producer.stop()
    acked = [v for v, r in zip(values, results, strict=True) if not isinstance(r, BaseException)]
    return acked, count - len(acked)


async def phase(bootstrap: str, topic: str, label: str) -> tuple[list[str], int]:
    runs = await asyncio.gather(*(produce(bootstrap, topic, f"{label}{p}", PER_PRODUCER) for p in range(PRODUCERS)))
    return [v for acked, _ in runs for v in acked], sum(failed for _, failed in runs)


async def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 20) -> list[str]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    out: list[str] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet_until = None
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            got = [r.value.decode() for records in batch.values() for r in records]
            out += got
            if len(out) >= expected:  # read on a little: duplicates past the count would show
                quiet_until = quiet_until or loop.time() + 1.0
                if loop.time() > quiet_until:
                    break
    finally:
        await consumer.stop()
    return out


async def test_concurrent_producers_lose_no_acknowledged_message_across_a_restart(tmp_path: Path) -> None:
    state_dir = tmp_path / "stack"
    topic = f"durable-{uuid.uuid4().hex[:8]}"
    try:
        state = await asyncio.to_thread(local.up, state_dir, services_to_run=())
        await create_topic(state["kafka"]["bootstrap"], topic)
        before, failed_before = await phase(state["kafka"]["bootstrap"], topic, "a")

        await asyncio.to_thread(local.down, state_dir)  # the S3 server, the broker and Postgres all stop
        state = await asyncio.to_thread(local.up, state_dir, services_to_run=())
        producing = asyncio.create_task(phase(state["kafka"]["bootstrap"], topic, "b"))
        await asyncio.sleep(0.5)
        assert not producing.done(), "the producers finished before the kill: give them more to send"
        os.killpg(state["s3"]["pid"], signal.SIGKILL)  # mid-write: nothing may be half-acknowledged
        while alive(state["s3"]["pid"]):  # else `up` could still find it running and keep it
            await asyncio.sleep(0.05)
        state = await asyncio.to_thread(local.up, state_dir, services_to_run=())  # restarts only the S3 server
        after, failed_after = await asyncio.wait_for(producing, 60)  # the broker resumes on the restarted S3

        acked = before + after
        assert failed_before == 0 and len(after) > 0, (failed_before, failed_after)
        read = await read_all(state["kafka"]["bootstrap"], topic, len(acked))
    finally:
        await asyncio.to_thread(local.down, state_dir, wipe=True)
    counts = Counter(read)
    lost = [v for v in acked if counts[v] == 0]
    duplicated = [v for v, n in counts.items() if n > 1]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged messages lost, e.g. {lost[:5]}"
    assert not duplicated, f"{len(duplicated)} messages read more than once, e.g. {duplicated[:5]}"
    assert set(counts) <= {f"{label}{p}-{i}" for label in "ab" for p in range(PRODUCERS) for i in range(PER_PRODUCER)}
