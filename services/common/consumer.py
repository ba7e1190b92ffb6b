"""The one consumer base: inbox deduplication, bounded retries, dead letters, manual commits.

A batch of records is applied in ONE Postgres transaction, each record inside its own savepoint:
the inbox row, the handler's state change and the events it emits (outbox) commit together or
not at all. Kafka offsets are committed only after that transaction commits, so a crash at any
point replays the batch and the inbox turns the replay into no-ops: at-least-once delivery,
exactly-once effects.

A handler that keeps failing (`max_attempts`) or raises `PermanentError` sends the event to
`<topic>.dlq` (through the outbox, so even the dead letter is not lost) and the consumer moves on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from psycopg_pool import AsyncConnectionPool

from services.common import metrics, outbox
from services.common.contracts import Event, parse_event

log = logging.getLogger(__name__)

Apply = Callable[[psycopg.AsyncConnection, Any, Any], Awaitable[Iterable[Event] | None]]
Prepare = Callable[[Any], Awaitable[Any]]


class PermanentError(Exception):
    """The event can never be applied (bad content); retrying is pointless."""


@dataclass(frozen=True)
class Handler:
    """How a service reacts to one topic.

    `prepare` (optional) runs for every event of a batch concurrently and outside the database
    transaction — the place for slow I/O such as LLM calls. `apply` then runs inside the
    transaction with the prepared value and returns the events to publish.
    """

    apply: Apply
    prepare: Prepare | None = None


@dataclass
class _Outcome:
    result: Any = None
    error: BaseException | None = None


class EventConsumer:
    def __init__(self, *, service: str, pool: AsyncConnectionPool, bootstrap: str,
                 handlers: Mapping[str, Handler], relay: outbox.OutboxRelay,
                 session_timeout_ms: int, heartbeat_interval_ms: int,
                 max_batch: int = 500, max_attempts: int = 3, fetch_min_bytes: int = 1,
                 fetch_max_wait_ms: int = 500) -> None:
        self.service = service
        self._pool = pool
        self._handlers = dict(handlers)
        self._relay = relay
        self._max_attempts = max_attempts
        self._max_batch = max_batch
        self._consumer = AIOKafkaConsumer(
            *self._handlers,
            bootstrap_servers=bootstrap,
            group_id=f"radcurate-{service}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_timeout_ms,
            heartbeat_interval_ms=heartbeat_interval_ms,
            rebalance_timeout_ms=session_timeout_ms,
            max_poll_records=max_batch,
            fetch_min_bytes=fetch_min_bytes,
            fetch_max_wait_ms=fetch_max_wait_ms,
        )
        self.ready = False

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def run(self) -> None:
        """Consume until cancelled."""
        while True:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=self._max_batch)
            self.ready = True
            for tp, records in batches.items():
                await self._process_partition_batch(tp, records)
            await self._observe_lag()

    async def _process_partition_batch(self, tp: TopicPartition, records: list[ConsumerRecord]) -> None:
        try:
            await self._apply_batch(tp.topic, records)
        except Exception:
            # The transaction itself failed (database gone, serialisation): nothing was applied.
            # Rewind so the whole batch is fetched again once the database is back.
            log.exception("batch on %s failed; will replay from offset %d", tp, records[0].offset)
            self._consumer.seek(tp, records[0].offset)
            await asyncio.sleep(1)
            return
        self._relay.notify()
        await self._consumer.commit({tp: records[-1].offset + 1})

    async def _apply_batch(self, topic: str, records: list[ConsumerRecord]) -> None:
        handler = self._handlers[topic]
        decoded = [self._decode(r) for r in records]
        prepared = await self._prepare_all(handler, decoded)
        async with self._pool.connection() as conn:
            async with conn.transaction():
                for record, event, prep in zip(records, decoded, prepared, strict=True):
                    await self._apply_one(conn, handler, record, event, prep)

    def _decode(self, record: ConsumerRecord) -> Event | PermanentError:
        try:
            return parse_event(json.loads(record.value))
        except Exception as exc:  # undecodable: straight to the dead-letter topic
            return PermanentError(f"cannot decode message: {exc}")

    async def _prepare_all(self, handler: Handler, decoded: list[Any]) -> list[_Outcome]:
        if handler.prepare is None:
            return [_Outcome() for _ in decoded]

        async def one(event: Any) -> _Outcome:
            if isinstance(event, Exception):
                return _Outcome()
            for attempt in range(1, self._max_attempts + 1):
                try:
                    return _Outcome(result=await handler.prepare(event))
                except PermanentError as exc:
                    return _Outcome(error=exc)
                except Exception as exc:
                    if attempt == self._max_attempts:
                        return _Outcome(error=exc)
                    await asyncio.sleep(0.05 * 2**attempt)
            raise AssertionError("unreachable")

        return await asyncio.gather(*(one(e) for e in decoded))

    async def _apply_one(self, conn: psycopg.AsyncConnection, handler: Handler,
                         record: ConsumerRecord, event: Any, prep: _Outcome) -> None:
        started = time.perf_counter()
        failure = event if isinstance(event, Exception) else prep.error
        attempt = 0
        while failure is None or (not isinstance(failure, PermanentError) and attempt < self._max_attempts):
            attempt += 1
            try:
                outcome = await self._try_apply(conn, handler, record, event, prep.result)
                metrics.EVENTS_CONSUMED.labels(self.service, record.topic, outcome).inc()
                metrics.EVENT_PROCESSING.labels(self.service, record.topic).observe(time.perf_counter() - started)
                return
            except Exception as exc:
                failure = exc
                metrics.EVENTS_CONSUMED.labels(self.service, record.topic, "retried").inc()
                log.warning("applying %s@%d failed (attempt %d): %s", record.topic, record.offset, attempt, exc)
                if attempt < self._max_attempts:
                    await asyncio.sleep(0.05 * 2**attempt)
        await self._dead_letter(conn, record, event, failure, attempt)

    async def _try_apply(self, conn: psycopg.AsyncConnection, handler: Handler,
                         record: ConsumerRecord, event: Event, prepared: Any) -> str:
        async with conn.transaction():  # a savepoint: a failure here leaves the batch intact
            cur = await conn.execute(
                "INSERT INTO inbox (event_id, topic, outcome) VALUES (%s, %s, 'applied')"
                " ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                (event.event_id, record.topic),
            )
            if await cur.fetchone() is None:
                return "duplicate"
            emitted = await handler.apply(conn, event, prepared)
            await outbox.record(conn, emitted or ())
        return "applied"

    async def _dead_letter(self, conn: psycopg.AsyncConnection, record: ConsumerRecord,
                           event: Any, error: BaseException | None, attempts: int) -> None:
        event_id = event.event_id if isinstance(event, Event) else f"{record.topic}:{record.partition}:{record.offset}"
        dlq_topic = f"{record.topic}.dlq"
        letter = {
            "event_id": f"dlq:{self.service}:{event_id}",
            "original_event_id": event_id,
            "original_topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "service": self.service,
            "error": f"{type(error).__name__}: {error}",
            "traceback": "".join(traceback.format_exception(error)) if error else "",
            "attempts": attempts,
            "failed_at": datetime.now(UTC).isoformat(),
            "payload": record.value.decode("utf-8", errors="replace"),
        }
        async with conn.transaction():
            cur = await conn.execute(
                "INSERT INTO inbox (event_id, topic, outcome) VALUES (%s, %s, 'dead_lettered')"
                " ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                (event_id, record.topic),
            )
            if await cur.fetchone() is None:
                return
            key = (record.key or b"").decode("utf-8", errors="replace")
            await outbox.record_raw(conn, dlq_topic, key, letter["event_id"], letter)
        log.error("dead-lettered %s to %s: %s", event_id, dlq_topic, letter["error"])
        metrics.DLQ_EVENTS.labels(self.service, record.topic).inc()
        metrics.EVENTS_CONSUMED.labels(self.service, record.topic, "dead_lettered").inc()

    async def _observe_lag(self) -> None:
        lag: dict[str, int] = {}
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is None:
                continue
            position = await self._consumer.position(tp)
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, high - position)
        for topic, value in lag.items():
            metrics.CONSUMER_LAG.labels(self.service, topic).set(value)
