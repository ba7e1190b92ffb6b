"""Kafka plumbing shared by every service: the producer the outbox relay uses, topic creation.

No idempotent or transactional producer: correctness comes from the outbox and the inbox, and
the local broker (tansu) does not implement InitProducerId.
"""

from __future__ import annotations

import logging

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from services.common.catalogue import topics

log = logging.getLogger(__name__)

# Every topic and its dead-letter topic, from the event catalogue (the one source of the list).
ALL_TOPICS: tuple[str, ...] = topics()


def make_producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        max_batch_size=256 * 1024,
    )


async def ensure_topics(bootstrap: str, topics: tuple[str, ...] = ALL_TOPICS, partitions: int = 4) -> list[str]:
    """Create missing topics; returns the ones created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing]
                )
            except TopicAlreadyExistsError:
                pass
        return missing
    finally:
        await admin.close()
