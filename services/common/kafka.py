"""Kafka plumbing shared by every service: how a client connects (address and authentication),
the producer the outbox relay uses, topic creation.

No idempotent or transactional producer: correctness comes from the outbox and the inbox, and
the local broker (tansu) does not implement InitProducerId.

Every Kafka client of a service is built from one `KafkaConnection` (from its settings, see
`KafkaConnection.from_settings`): a broker that requires SASL/SCRAM (Strimzi's `scram-sha-512`
listener, a managed Kafka) then gets the same credentials from the producer, the consumer, the
admin client and the dead-letter reader. A plain address string still works where no
authentication is configured (the local stack's tansu: see the README's local-stack section).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context
from pydantic import SecretStr

from services.common.catalogue import topics

log = logging.getLogger(__name__)

# Every topic and its dead-letter topic, from the event catalogue (the one source of the list).
ALL_TOPICS: tuple[str, ...] = topics()


SecurityProtocol = Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256"]


class KafkaSettings(Protocol):
    """The settings fields a Kafka connection is made of (ServiceSettings has them)."""

    kafka_bootstrap: str
    kafka_security_protocol: SecurityProtocol
    kafka_sasl_mechanism: SaslMechanism
    kafka_sasl_username: str | None
    kafka_sasl_password: SecretStr | None
    kafka_ssl_cafile: str | None


@dataclass(frozen=True)
class KafkaConnection:
    """Where a Kafka client connects and how it authenticates."""

    bootstrap: str
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    username: str | None = None
    password: SecretStr | None = None
    ssl_cafile: str | None = None  # None with TLS: the system's trusted CAs

    def __post_init__(self) -> None:
        if self.security_protocol.startswith("SASL_") and not (self.username and self.password
                                                                and self.password.get_secret_value()):
            raise ValueError(f"Kafka security protocol {self.security_protocol} needs a SASL username and password")

    @classmethod
    def from_settings(cls, settings: KafkaSettings) -> KafkaConnection:
        return cls(settings.kafka_bootstrap, settings.kafka_security_protocol, settings.kafka_sasl_mechanism,
                   settings.kafka_sasl_username, settings.kafka_sasl_password, settings.kafka_ssl_cafile)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments every aiokafka client (producer, consumer, admin) takes."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "security_protocol": self.security_protocol}
        if self.security_protocol in ("SASL_SSL", "SSL"):
            options["ssl_context"] = create_ssl_context(cafile=self.ssl_cafile)
        if self.security_protocol.startswith("SASL_"):
            assert self.password is not None  # checked in __post_init__
            options.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.username,
                           sasl_plain_password=self.password.get_secret_value())
        return options


def client_options(connection: KafkaConnection | str) -> dict[str, Any]:
    """aiokafka's connection keywords for `connection` (a bare address: no authentication)."""
    if isinstance(connection, str):
        connection = KafkaConnection(connection)
    return connection.client_options()


def make_producer(connection: KafkaConnection | str) -> AIOKafkaProducer:
    """The outbox relay's producer. No linger: the relay enqueues a whole round of rows without
    yielding to the event loop (aiokafka's send() does not suspend while the topic's metadata is
    known and the buffer has room), so the round is already one batch per partition when the
    sender first looks; a linger only held every round, each broker hop, that much longer."""
    return AIOKafkaProducer(
        **client_options(connection),
        acks="all",
        enable_idempotence=False,
        linger_ms=0,
        max_batch_size=256 * 1024,
    )


def set_fetch_wait(consumer: AIOKafkaConsumer, wait_ms: int) -> None:
    """Make the started `consumer`'s next fetch requests ask the broker to wait up to `wait_ms`
    (fetch_max_wait_ms, which aiokafka otherwise fixes at construction; see fetch_pacing.py).
    aiokafka 0.14 reads it from its fetcher each time it builds a fetch request; a fetch already in
    flight keeps the wait it was sent with."""
    fetcher = consumer._fetcher
    if fetcher is None or not hasattr(fetcher, "_fetch_max_wait_ms"):
        raise RuntimeError("set_fetch_wait needs a started aiokafka consumer whose fetcher has _fetch_max_wait_ms"
                           " (aiokafka 0.14)")
    fetcher._fetch_max_wait_ms = wait_ms


async def ensure_topics(connection: KafkaConnection | str, topics: tuple[str, ...] = ALL_TOPICS,
                        partitions: int = 4) -> list[str]:
    """Create missing topics; returns the ones created."""
    admin = AIOKafkaAdminClient(**client_options(connection))
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
