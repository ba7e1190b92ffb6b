"""Transactional outbox: record events with the state change, publish them after commit.

`record()` is called inside a unit of work. The relay runs in every service process: it reads
unpublished rows in id order, sends them (keyed by study_id, so per-study order holds on one
partition), waits for the broker's acks, then marks them published. A crash between send and
mark re-sends on restart: delivery is at-least-once and consumers deduplicate by event_id.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable

import psycopg
from aiokafka import AIOKafkaProducer
from psycopg_pool import AsyncConnectionPool

from services.common import metrics
from services.common.contracts import Event

log = logging.getLogger(__name__)


async def record(conn: psycopg.AsyncConnection, events: Iterable[Event]) -> None:
    """Add events to the outbox within the caller's transaction."""
    rows = [
        (e.event_id, e.topic.value, e.study_id, e.model_dump_json())
        for e in events
    ]
    await _insert(conn, rows)


async def record_raw(conn: psycopg.AsyncConnection, topic: str, key: str, event_id: str, payload: dict) -> None:
    """Add an arbitrary message (a dead letter) to the outbox within the caller's transaction."""
    await _insert(conn, [(event_id, topic, key, json.dumps(payload, default=str))])


async def _insert(conn: psycopg.AsyncConnection, rows: list[tuple[str, str, str, str]]) -> None:
    if not rows:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO outbox (event_id, topic, msg_key, payload) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (event_id) DO NOTHING",
            rows,
        )


class OutboxRelay:
    """Publishes outbox rows to Kafka; wake it with `notify()` after a commit for low latency."""

    def __init__(self, pool: AsyncConnectionPool, producer: AIOKafkaProducer, service: str,
                 poll_seconds: float = 0.5, batch: int = 1000, linger_seconds: float = 0.0) -> None:
        self._pool = pool
        self._producer = producer
        self._service = service
        self._poll = poll_seconds
        self._linger = linger_seconds
        self._batch = batch
        self._wake = asyncio.Event()

    def notify(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                sent = await self.publish_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # broker or DB blip: keep the rows, try again shortly
                log.exception("outbox relay failed; retrying")
                sent = 0
                await asyncio.sleep(1)
            if sent < self._batch:
                await self._wait()

    async def _wait(self) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=self._poll)
            await asyncio.sleep(self._linger)  # let concurrent commits join this batch
        except TimeoutError:
            pass
        self._wake.clear()

    async def publish_once(self) -> int:
        """Publish one batch; returns how many rows were sent."""
        async with self._pool.connection() as conn:
            async with conn.transaction():
                cur = await conn.execute(
                    "SELECT id, topic, msg_key, payload FROM outbox WHERE published_at IS NULL"
                    " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                    (self._batch,),
                )
                rows = await cur.fetchall()
                if not rows:
                    return 0
                futures = [
                    await self._producer.send(
                        r["topic"], key=r["msg_key"].encode(), value=json.dumps(r["payload"]).encode()
                    )
                    for r in rows
                ]
                await asyncio.gather(*futures)
                await conn.execute(
                    "UPDATE outbox SET published_at = now() WHERE id = ANY(%s)", ([r["id"] for r in rows],)
                )
        for r in rows:
            metrics.EVENTS_PUBLISHED.labels(self._service, r["topic"]).inc()
        return len(rows)

    async def observe_backlog(self) -> None:
        """Refresh the backlog gauges (called by the metrics loop)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) AS n, extract(epoch FROM now() - min(created_at)) AS age"
                " FROM outbox WHERE published_at IS NULL"
            )
            row = await cur.fetchone()
            await conn.rollback()
        metrics.OUTBOX_BACKLOG.labels(self._service).set(row["n"])
        metrics.OUTBOX_OLDEST_AGE.labels(self._service).set(float(row["age"] or 0))
