"""Transactional outbox: record events with the state change, publish them after commit.

`record()` is called inside a unit of work. The relay runs in every service process: it reads
unpublished rows in id order, sends them (keyed by study_id, so per-study order holds on one
partition), waits for the broker's acks, then marks them published. A crash between send and
mark re-sends on restart: delivery is at-least-once and consumers deduplicate by event_id.

Events stay small by design: large content (submissions, instance lists, releases) lives in the
object store and the event carries its key and sha256. `record()` enforces that with a size
check, so an oversized event is the caller's clear error (`EventTooLarge`) and never a row the
relay cannot send. Should the broker still refuse a row for good, the relay parks it with its
error (`radcurate_outbox_parked_total`, alert `RadcurateOutboxParked`) and the rows after it flow.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import psycopg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidMessageError,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnsupportedForMessageFormatError,
)
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from services.common import metrics
from services.common.contracts import Event
from services.common.db import autocommit
from services.common.failures import PermanentError

log = logging.getLogger(__name__)
delivery = logging.getLogger("radcurate.delivery")

# The largest message the relay will be asked to send. Kafka's default limits (message.max.bytes,
# the producer's max.request.size) are 1 MiB; half of that leaves room for a dead letter, which
# carries the original message plus its error, and for the broker's record overhead.
MAX_EVENT_BYTES = 512 * 1024


class EventTooLarge(PermanentError, ValueError):
    """An event larger than `MAX_EVENT_BYTES`: put its bulk in the object store, send the key."""


def encode(payload: Any) -> bytes:
    """The bytes the relay sends for a payload: compact, UTF-8, no ASCII escaping (which can
    make non-Latin text six times larger than the event that was recorded)."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def check_size(topic: str, event_id: str, size: int, limit: int = MAX_EVENT_BYTES) -> None:
    """Raise EventTooLarge when a message of `size` bytes cannot travel through the broker."""
    if size > limit:
        raise EventTooLarge(f"{topic} event {event_id} is {size} bytes; events are limited to {limit} bytes"
                            " (large content belongs in the object store, referenced by key and sha256)")


async def record(conn: psycopg.AsyncConnection, events: Iterable[Event]) -> None:
    """Add events to the outbox within the caller's transaction (EventTooLarge if one is too big)."""
    rows = []
    for e in events:
        body = e.model_dump_json()
        check_size(e.topic.value, e.event_id, len(body.encode()))
        rows.append((e.event_id, e.topic.value, e.study_id, body, None))
    await _insert(conn, rows)


async def record_raw(conn: psycopg.AsyncConnection, topic: str, key: str, event_id: str, payload: dict,
                     headers: Mapping[str, str] | None = None, limit: int = MAX_EVENT_BYTES) -> None:
    """Add an arbitrary message (a dead letter, a replay) to the outbox within the caller's transaction."""
    body = encode(payload)
    check_size(topic, event_id, len(body), limit)
    await _insert(conn, [(event_id, topic, key, body.decode(), json.dumps(dict(headers)) if headers else None)])


# The payload column is json, not jsonb (migration 003): stored as recorded, sent as stored.
# One statement for all of a unit of work's events, however many: Postgres parses, plans and
# executes once, where one INSERT per event cost a statement each (a consumer batch of 500 events
# emitted 500). Rows keep their order: ids are drawn as the ordered rows are inserted, and the
# relay publishes in id order (per-study order on the partition). A duplicate event_id, even
# within the statement, is skipped as before. The arrays travel in binary: psycopg quotes every
# element of a text-format array in Python (JSON is full of quotes), ~3x the CPU of executemany;
# binary arrays take about half of executemany's client CPU per row.
_INSERT_MANY = (
    "INSERT INTO outbox (event_id, topic, msg_key, payload, headers)"
    " SELECT e, t, k, p::json, h::jsonb FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[])"
    " WITH ORDINALITY AS u(e, t, k, p, h, n) ORDER BY n"
    " ON CONFLICT (event_id) DO NOTHING"
)


async def _insert(conn: psycopg.AsyncConnection, rows: list[tuple[str, str, str, str, str | None]]) -> None:
    """Insert outbox rows (event_id, topic, key, payload JSON, headers JSON or None) in order."""
    if not rows:
        return
    event_ids, topics, keys, payloads, headers = (list(column) for column in zip(*rows, strict=True))
    await conn.execute(_INSERT_MANY, (event_ids, topics, keys, payloads, headers))


# Errors that are about the row itself, so sending it again can never succeed. Deliberately an
# allow-list: aiokafka marks outage errors (KafkaTimeoutError, BrokerNotAvailableError...) as
# not retriable too, and parking on those would set aside every row during a broker restart.
# Errors about the cluster (authorisation, unknown topic) leave the row to be retried while the
# rest flow, and RadcurateOutboxStuck fires as it ages.
_ROW_REFUSED = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError, CorruptRecordException,
                InvalidMessageError, InvalidTopicError, UnsupportedForMessageFormatError)


def is_refused_for_good(exc: BaseException) -> bool:
    """The broker (or the client, before sending) will never accept this row as it is."""
    return isinstance(exc, _ROW_REFUSED) or (
        not isinstance(exc, KafkaError) and isinstance(exc, ValueError | TypeError))  # cannot be encoded


# Whether any row waits for the relay: one look into the `outbox_unpublished` partial index.
_ANY_PENDING = "SELECT EXISTS (SELECT 1 FROM outbox WHERE published_at IS NULL AND parked_at IS NULL)"


class OutboxRelay:
    """Publishes outbox rows to Kafka; wake it with `notify()` after a commit for low latency."""

    def __init__(self, pool: AsyncConnectionPool, producer: AIOKafkaProducer, service: str,
                 poll_seconds: float = 0.5, batch: int = 1000, linger_seconds: float = 0.0,
                 delivery_log: bool = False, quiet_seconds: float = 0.05) -> None:
        self._pool = pool
        self._delivery_log = delivery_log
        self._producer = producer
        self._service = service
        self._poll = poll_seconds
        self._linger = linger_seconds
        self._quiet = quiet_seconds
        self._batch = batch
        self._wake = asyncio.Event()
        self._hurry = asyncio.Event()  # a commit whose rows should not wait for company (notify)
        # time.monotonic() of the last round that sent rows, and of the last notify() (see _wait)
        self._last_round = float("-inf")
        self._last_commit = float("-inf")
        self._on_publish: list[Callable[[], None]] = []

    def on_publish(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every round that sent rows (the consumer then expects answers)."""
        self._on_publish.append(callback)

    def notify(self, at_once: bool = False) -> None:
        """Tell the relay that a transaction with outbox rows has committed. `at_once`: a lone
        command (a sampling or release request), or a consumer's batch that drained its input,
        that no commit is coming to keep company: send it without the linger or the quiet gap,
        with whatever else is waiting."""
        self._last_commit = time.monotonic()
        if at_once:
            self._hurry.set()
        self._wake.set()

    async def run(self) -> None:
        probe = True  # look before locking: no commit told us of rows (see publish_once)
        while True:
            try:
                started = time.monotonic()
                sent = await self.publish_once(probe=probe)
                if sent:
                    self._last_round = started
                    for callback in self._on_publish:
                        callback()
            except asyncio.CancelledError:
                raise
            except Exception:  # broker or DB blip: keep the rows, try again shortly
                log.exception("outbox relay failed; retrying")
                sent = 0
                await asyncio.sleep(1)
            # After a full batch more rows are waiting; after a wake-up a commit said it wrote some.
            probe = sent < self._batch and not await self._wait()

    async def _wait(self) -> bool:
        """Wait for a commit's `notify()` (then for the commits that keep it company) or for the
        poll interval; True when a commit woke it."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=self._poll)
        except TimeoutError:
            return False
        else:
            # Let concurrent commits join this batch while they keep coming: until `linger` after
            # the previous round that sent rows (idle polls do not count), so a steady stream of
            # events still goes at most one round per `linger` (as many votes per produce request
            # as before), but never longer than `quiet` after the latest commit. The first event
            # after a quiet spell (a sampling or release request) goes out at once, and the last
            # of a stream (the campaign's last vote) waits `quiet`, not the rest of the linger,
            # for company that is not coming. One timer per `quiet`, not one per commit.
            # A lone command (`notify(at_once=True)`) ends the wait: the release request that
            # follows a campaign's last votes by less than the linger would otherwise wait `quiet`.
            while not self._hurry.is_set() and \
                    (until := min(self._last_round + self._linger, self._last_commit + self._quiet)) \
                    > (now := time.monotonic()):
                try:
                    await asyncio.wait_for(self._hurry.wait(), timeout=until - now)
                except TimeoutError:
                    pass
        finally:
            self._wake.clear()
            self._hurry.clear()
        return True

    async def publish_once(self, probe: bool = False) -> int:
        """Publish one batch; returns how many rows were sent or parked (rows that now have an outcome).

        Each row's send is judged on its own: sent rows are marked published, rows the broker
        refuses for good are parked with their error, rows that failed for a passing reason stay
        for the next round — none of them holds back the others.

        `probe`: first ask, in one autocommit statement, whether any row waits (the relay's poll,
        which no commit prompted: nearly always none). The locking read's transaction costs three
        round trips (BEGIN, the read, COMMIT), and every service polls every `poll_seconds` while
        idle and between rounds — on the local stack, five services five times a second.
        """
        async with self._pool.connection() as conn:
            if probe:
                async with autocommit(conn), conn.cursor(row_factory=tuple_row) as probing:
                    await probing.execute(_ANY_PENDING)
                    pending = await probing.fetchone()
                if not (pending and pending[0]):
                    return 0
            async with conn.transaction():
                # the payload as text: the message body exactly as recorded (a json column keeps it)
                cur = await conn.execute(
                    "SELECT id, event_id, topic, msg_key, payload::text AS payload, headers FROM outbox"
                    " WHERE published_at IS NULL AND parked_at IS NULL"
                    " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                    (self._batch,),
                )
                rows = await cur.fetchall()
                if not rows:
                    return 0
                rows, results = await self._send_all(rows)
                sent = [r for r, res in zip(rows, results, strict=True) if not isinstance(res, BaseException)]
                failed = [(r, res) for r, res in zip(rows, results, strict=True) if isinstance(res, BaseException)]
                parked = [(r, exc) for r, exc in failed if is_refused_for_good(exc)]
                if sent:
                    await conn.execute("UPDATE outbox SET published_at = now() WHERE id = ANY(%s)",
                                       ([r["id"] for r in sent],))
                for r, exc in parked:
                    await conn.execute("UPDATE outbox SET parked_at = now(), error = %s WHERE id = %s",
                                       (f"{type(exc).__name__}: {exc}"[:2000], r["id"]))
                    log.error("outbox row %s (%s) parked: the broker refuses it: %s", r["id"], r["topic"], exc)
                if len(failed) > len(parked):
                    log.warning("%d outbox rows failed to send; retrying them: %s",
                                len(failed) - len(parked), failed[0][1])
        for r in sent:
            metrics.child(metrics.EVENTS_PUBLISHED, self._service, r["topic"]).inc()
        if self._delivery_log:  # the producer's side of the consumers' delivery log (consumer.py)
            for r, res in zip(rows, results, strict=True):
                if not isinstance(res, BaseException):
                    delivery.info("%s published %s[%d]@%d %s", self._service, r["topic"], res.partition,
                                  res.offset, r["event_id"])
        for r, _ in parked:
            metrics.OUTBOX_PARKED.labels(self._service, r["topic"]).inc()
        if failed and not sent and not parked:
            raise failed[0][1]  # nothing moved: let run() back off
        return len(sent) + len(parked)

    async def _send_all(self, rows: list[dict]) -> tuple[list[dict], list[Any]]:
        """Enqueue rows one after the other (the producer keeps that order per partition, hence
        per study), then wait for every ack. Returns the rows tried and, for each, None or the
        exception it failed with. A row the client refuses before sending (too large) is judged
        on its own; any other refusal stops the enqueueing — the rows after it wait for the next
        round rather than overtake it."""
        pending: list[Any] = []
        for row in rows:
            headers = [(k, str(v).encode()) for k, v in (row["headers"] or {}).items()]
            try:
                pending.append(await self._producer.send(
                    row["topic"], key=row["msg_key"].encode(), value=row["payload"].encode(), headers=headers or None))
            except Exception as exc:  # noqa: BLE001 - judged by the caller, row by row
                pending.append(exc)
                if not is_refused_for_good(exc):
                    break
        futures = [p for p in pending if not isinstance(p, BaseException)]
        acks = iter(await asyncio.gather(*futures, return_exceptions=True))
        return rows[:len(pending)], [p if isinstance(p, BaseException) else next(acks) for p in pending]

    async def observe_backlog(self) -> None:
        """Refresh the backlog gauges (called by the metrics loop)."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FILTER (WHERE parked_at IS NULL) AS n,"
                " extract(epoch FROM now() - min(created_at) FILTER (WHERE parked_at IS NULL)) AS age,"
                " count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked"
                " FROM outbox WHERE published_at IS NULL"
            )
            row = await cur.fetchone()
            await conn.rollback()
        metrics.OUTBOX_BACKLOG.labels(self._service).set(row["n"])
        metrics.OUTBOX_OLDEST_AGE.labels(self._service).set(float(row["age"] or 0))
        metrics.OUTBOX_PARKED_EVENTS.labels(self._service).set(row["parked"])
