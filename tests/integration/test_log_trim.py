"""The local broker's log trimmer (radcurate/stack/logtrim.py) deletes exactly the record batches
every consumer group of a topic has committed past, and what stays is read as before."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from minio import Minio

from radcurate.stack import infra as stack_infra
from radcurate.stack.logtrim import CLUSTER, Trimmer, doomed
from radcurate.stack.procs import ours
from services.common.kafka import ensure_topics

pytestmark = pytest.mark.integration


def s3_client(state: dict) -> Minio:
    s3 = state["s3"]
    return Minio(s3["endpoint"], access_key=s3["access_key"], secret_key=s3["secret_key"], secure=False,
                 region="us-east-1")


def batches(client: Minio, topic: str) -> list[int]:
    prefix = f"clusters/{CLUSTER}/topics/{topic}/partitions/0000000000/records/"
    return sorted(int(o.object_name.rsplit("/", 1)[1][:20])
                  for o in client.list_objects(stack_infra.TANSU_BUCKET, prefix=prefix, recursive=True))


async def produce_one_by_one(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        for value in values:  # awaited one at a time: one batch object each
            await producer.send_and_wait(topic, value, partition=0)
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, group: str, count: int, commit: bool = True) -> list[bytes]:
    """`count` messages from the group's committed offset (the start for a new group), committed."""
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([tp])
        got: list[bytes] = []
        while len(got) < count:
            for records in (await asyncio.wait_for(consumer.getmany(tp, timeout_ms=1000, max_records=count - len(got)),
                                                   30)).values():
                got += [r.value for r in records]
        if commit:
            await consumer.commit({tp: (await consumer.position(tp))})
        return got
    finally:
        await consumer.stop()


def test_doomed_keeps_every_batch_not_wholly_below_the_commit_and_always_the_newest():
    assert doomed([0, 3, 5, 9], 5) == [0, 3]  # batch 5 (offsets 5-8) is not read yet
    assert doomed([0, 3, 5, 9], 6) == [0, 3]  # batch 5 half read: kept
    assert doomed([9, 0, 5, 3], 100) == [0, 3, 5]  # the newest stays, whatever the commit
    assert doomed([0], 100) == []
    assert doomed([], 100) == []


def test_the_stack_runs_a_trimmer_beside_its_own_broker(infra):
    assert ours(infra.get("logtrim"))


def test_only_batches_every_group_has_read_are_deleted_and_the_rest_reads_as_before(infra, fresh_topic):
    bootstrap, client = infra["kafka"]["bootstrap"], s3_client(infra)
    asyncio.run(ensure_topics(bootstrap, (fresh_topic,), partitions=1))
    values = [f"m{i}".encode() for i in range(10)]
    asyncio.run(produce_one_by_one(bootstrap, fresh_topic, values))
    assert batches(client, fresh_topic) == list(range(10))
    trimmer = Trimmer(client, stack_infra.TANSU_BUCKET, {fresh_topic: ("g-fast", "g-slow")})

    assert asyncio.run(consume(bootstrap, fresh_topic, "g-fast", 10)) == values
    assert trimmer.trim() == 0  # g-slow has not committed: it would start from the beginning
    assert batches(client, fresh_topic) == list(range(10))

    assert asyncio.run(consume(bootstrap, fresh_topic, "g-slow", 6)) == values[:6]
    assert trimmer.trim() == 6
    assert batches(client, fresh_topic) == list(range(6, 10))
    # The slow group goes on from its commit, and nothing it has not read is gone.
    assert asyncio.run(consume(bootstrap, fresh_topic, "g-slow", 4)) == values[6:]

    more = [b"n0", b"n1"]
    asyncio.run(produce_one_by_one(bootstrap, fresh_topic, more))
    assert asyncio.run(consume(bootstrap, fresh_topic, "g-fast", 2)) == more
    assert asyncio.run(consume(bootstrap, fresh_topic, "g-slow", 2)) == more
    assert trimmer.trim() == 5
    assert batches(client, fresh_topic) == [11]  # the newest batch always stays
    assert trimmer.trim() == 0  # nothing produced since: the round reads one watermark only
