"""Kafka plumbing shared by every service: the producer the outbox relay uses, topic creation.

No idempotent or transactional producer: correctness comes from the outbox and the inbox, and
the local broker (tansu) does not implement InitProducerId.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

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


# How long a service's shutdown waits for a Kafka client to stop cleanly before abandoning it.
STOP_SECONDS = 10.0


async def stop_producer(producer: AIOKafkaProducer, timeout: float = STOP_SECONDS) -> bool:
    """Flush and stop `producer`, abandoning it after `timeout` s; True when it stopped cleanly.

    aiokafka's stop() waits for every pending batch to be answered, with no bound of its own:
    a broker that cannot write its log (tansu with its S3 server hung or down) or that is gone
    keeps a shutdown waiting 30-40 s per batch, past any supervisor's grace period. Abandoning is
    safe: the outbox marks a row published only once the broker acknowledged it, so what was
    pending is sent again by the next relay, and the inbox drops what arrives twice.
    """
    if await _stop_within(producer.stop(), "producer", timeout):
        return True
    # What stop() did not reach (aiokafka 0.14 internals): callers still awaiting a send are told
    # it failed, the sender task is cancelled and the connections are closed.
    producer._message_accumulator.fail_all(KafkaConnectionError("producer abandoned at shutdown"))
    if producer._sender is not None:
        await _stop_within(producer._sender.close(), "producer sender", 1.0)
    await _stop_within(producer.client.close(), "producer connections", 1.0)
    return False


async def stop_consumer(consumer: AIOKafkaConsumer, timeout: float = STOP_SECONDS) -> bool:
    """Stop `consumer` (leaving its group), abandoning it after `timeout` s; True when it stopped
    cleanly. A group leave the broker cannot record waits like a produce (see stop_producer);
    offsets are committed by the consume loop, never at stop, so nothing is lost by giving up."""
    if await _stop_within(consumer.stop(), "consumer", timeout):
        return True
    await _stop_within(consumer._client.close(), "consumer connections", 1.0)
    return False


async def _stop_within(stopping: Coroutine[Any, Any, Any], what: str, timeout: float) -> bool:
    """Run `stopping` for up to `timeout` s (cancelled after); False, logged, when it ran out."""
    task = asyncio.ensure_future(stopping)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if task in done:
        if not task.cancelled() and task.exception() is not None:
            log.warning("stopping the Kafka %s failed: %r", what, task.exception())
        return True
    log.warning("the Kafka %s did not stop within %.0f s (the broker does not answer); abandoning it", what, timeout)
    task.cancel()
    await asyncio.wait({task}, timeout=1.0)
    return False
