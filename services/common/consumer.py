"""The one consumer base: inbox deduplication, bounded retries, dead letters, manual commits.

A batch of records is applied in ONE Postgres transaction: the inbox rows, the handlers' state
changes and the events they emit (outbox) commit together or not at all. Optimistically the batch
runs without savepoints, its inbox rows and its outbox rows one statement each; if anything in it
fails, the transaction rolls back whole and the batch runs again with each record inside its own
savepoint, so one failing record gets its own outcome (retried, deferred or dead-lettered) and the
others commit. A handler may also take the batch whole (`Handler.apply_many`: the batch's new events
at once, so that e.g. all its votes go in one statement); the fallback still runs its per-record
`apply`, so dead letters and idempotency stay per record. Kafka offsets are committed only after
that transaction commits, so a crash at any point replays the batch and the inbox turns the replay
into no-ops: at-least-once delivery, exactly-once effects. The offset commit is sent beside the
next poll, not awaited before it (`_commit_soon`): a batch whose offset a crash kept from the broker
is replayed like any other. That transaction commits *synchronously*
(`synchronous_commit = on` for the connection, set once per connection: `_synchronous`), whatever
the server's default: an asynchronous commit returns before its WAL leaves Postgres's memory, so a
crash of Postgres after the offset commit would lose effects whose records the group has already
passed — lost for good. One synchronous commit per batch covers every record of it. And the offset
moves only if that transaction really committed (see `_committed`: psycopg does not raise when a
block ends on a connection that already broke). Metrics and delivery-log outcomes are recorded after
the commit.

Every record has one of three outcomes:
- applied (or recognised as a duplicate);
- *deferred*: a dependency failed transiently (database, object store, LLM endpoint — see
  `failures.is_transient`). The records before it commit; the partition seeks back to it and
  pauses, with a bounded, jittered backoff, for as long as the outage lasts. Nothing is
  dead-lettered because something else was down;
- dead-lettered to `<topic>.dlq` (through the outbox, so even the dead letter is not lost): an
  undecodable message (a tombstone included), a `PermanentError`, or any other error that
  persists for `max_attempts` tries. The letter keeps the exact original bytes for a replay.

How long each fetch may wait at the broker follows the traffic (`fetch_pacing.py`): short for a
while after records arrived or the service published, the configured `fetch_max_wait_ms` when idle
(the local broker only looks for new data at fixed points of a fetch's wait). The events a batch
emits go out at once when that batch held the last records the broker had (the relay's linger
gathers commits that keep coming; a drained consumer's next commit is a produce and a fetch away).

The loop survives rebalances (a failed offset commit is harmless: the new owner replays, the
inbox deduplicates) and restarts its Kafka client after an unexpected failure; if that keeps
failing, `run()` raises and the runtime ends the process non-zero so a supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from services.common import deadletters, metrics, outbox
from services.common.contracts import Event, decode_event
from services.common.failures import PermanentError, TransientError, is_transient
from services.common.fetch_pacing import FetchPacing
from services.common.kafka import STOP_SECONDS, KafkaConnection, client_options, set_fetch_wait, stop_consumer

__all__ = ["EventConsumer", "Handler", "OneByOne", "PermanentError", "TransientError"]

log = logging.getLogger(__name__)
# One line per record's outcome and per offset commit, when `delivery_log` is on (the fault test
# turns it on to trace an event from the producer's ack to its effect).
delivery = logging.getLogger("radcurate.delivery")

Apply = Callable[[psycopg.AsyncConnection, Any, Any], Awaitable[Iterable[Event] | None]]
ApplyMany = Callable[[psycopg.AsyncConnection, list[Any], list[Any]], Awaitable[Iterable[Event]]]
Prepare = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True)
class Handler:
    """How a service reacts to one topic.

    `prepare` (optional) runs for every event of a batch concurrently and outside the database
    transaction — the place for slow I/O such as LLM calls. `apply` then runs inside the
    transaction with the prepared value and returns the events to publish.

    `apply_many` (optional) is the batch-level form of `apply`: on the one-transaction path it
    gets every new event of the batch (in record order, duplicates already removed by the inbox)
    with their prepared values, and returns the events to publish in record order — so a batch's
    records can share round trips (one statement for all votes instead of one per vote). It must
    have exactly the effects of calling `apply` on each event in order. Should it fail, or raise
    `OneByOne` for a case it does not batch, the batch rolls back whole and runs record by record
    through `apply`, so dead letters and retries stay per record.
    """

    apply: Apply
    prepare: Prepare | None = None
    apply_many: ApplyMany | None = None


class OneByOne(Exception):  # noqa: N818 - a signal, not an error
    """Raised by an `apply_many` for a batch it leaves to `apply` (a rare case it does not batch):
    the batch's transaction rolls back and the batch runs record by record."""


@dataclass
class _Outcome:
    result: Any = None
    error: BaseException | None = None

    @property
    def transient(self) -> bool:
        return self.error is not None and is_transient(self.error)


@dataclass
class _Seen:
    """One record's outcome, observed (metrics, delivery log) only once its transaction committed."""

    record: ConsumerRecord
    event_id: str
    outcome: str  # applied, duplicate, dead_lettered
    seconds: float | None = None
    error: str | None = None


# The inbox rows of a whole batch in one statement; RETURNING lists the events not seen before.
# DO NOTHING, not the per-record path's conditional DO UPDATE: that one lets a dead letter's replay
# overwrite its row, and replays never take this path (`_fits_one_transaction`). A second copy of
# an event within the statement is skipped like any duplicate. The ids travel as a binary array
# (%b): a text-format one is written element by element in Python (~12 us an id against ~2 for
# 100 ids, load ~7).
_INBOX_MANY = ("INSERT INTO inbox (event_id, topic, outcome) SELECT event_id, %s, 'applied'"
               " FROM unnest(%b::text[]) AS event_id ON CONFLICT (event_id) DO NOTHING RETURNING event_id")


@dataclass
class _Pause:
    """A partition waiting for a dependency: resumed at `until` (monotonic clock)."""

    offset: int
    attempt: int
    until: float
    error: str


class BatchNotCommitted(TransientError):
    """The batch's transaction did not commit (its connection broke): replay it from its start."""


class _Deferred(Exception):
    """Internal: applying this record failed transiently; stop the batch here."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class EventConsumer:
    def __init__(self, *, service: str, pool: AsyncConnectionPool, bootstrap: KafkaConnection | str,
                 handlers: Mapping[str, Handler], relay: outbox.OutboxRelay,
                 session_timeout_ms: int, heartbeat_interval_ms: int,
                 max_batch: int = 500, max_attempts: int = 3, fetch_min_bytes: int = 1,
                 fetch_max_wait_ms: int = 500, fetch_active_wait_ms: int | None = None,
                 fetch_active_seconds: float = 30.0, backoff_base_s: float = 0.5, backoff_max_s: float = 60.0,
                 max_restarts: int = 5, delivery_log: bool = False) -> None:
        self.service = service
        self._delivery_log = delivery_log
        self._pool = pool
        self._handlers = dict(handlers)
        self._relay = relay
        self._max_attempts = max_attempts
        self._max_batch = max_batch
        self._backoff_base, self._backoff_max = backoff_base_s, backoff_max_s
        self._max_restarts = max_restarts
        self._client_kwargs = dict(
            **client_options(bootstrap),
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
        # fetch_active_wait_ms (None: the same as fetch_max_wait_ms, a fixed wait): see fetch_pacing.py
        self._pacing = FetchPacing(fetch_max_wait_ms, fetch_max_wait_ms if fetch_active_wait_ms is None
                                   else fetch_active_wait_ms, fetch_active_seconds)
        self._fetch_wait_ms = fetch_max_wait_ms  # what the client's next fetch requests ask for
        if self._pacing.active_wait_ms != self._pacing.idle_wait_ms:
            relay.on_publish(self._note_activity)  # an answer to what the service sent is likely
        self._consumer = self._new_client()
        self._paused: dict[TopicPartition, _Pause] = {}
        self._attempts: dict[TopicPartition, int] = {}  # consecutive backoffs per partition
        self._durable_connections: weakref.WeakSet[psycopg.AsyncConnection] = weakref.WeakSet()
        self._recorded = 0  # outbox rows this consumer has written (events, dead letters): see _poll_once
        # Offsets to commit, the latest per partition, and the task committing them (`_commit_soon`).
        self._to_commit: dict[TopicPartition, int] = {}
        self._committing: asyncio.Task[None] | None = None
        self._commit_error: BaseException | None = None
        self.ready = False
        self.restarts = 0
        self.last_error: str | None = None

    def _new_client(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(*self._handlers, **self._client_kwargs)

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        """Send the offsets still to commit, then stop the Kafka client; each step is abandoned after
        kafka.STOP_SECONDS (the broker may not answer: what was not committed is replayed, harmlessly)."""
        if self._committing is not None and not self._committing.done():
            _, late = await asyncio.wait({self._committing}, timeout=STOP_SECONDS)
            for task in late:
                task.cancel()
        await stop_consumer(self._consumer)

    def state(self) -> dict[str, Any]:
        """What /healthz shows: partitions waiting for a dependency, and loop restarts."""
        now = time.monotonic()
        return {
            "paused": [{"topic": tp.topic, "partition": tp.partition, "offset": p.offset, "attempt": p.attempt,
                        "retry_in_seconds": round(max(0.0, p.until - now), 1), "error": p.error}
                       for tp, p in sorted(self._paused.items())],
            "restarts": self.restarts,
            "last_error": self.last_error,
        }

    async def run(self) -> None:
        """Consume until cancelled. An unexpected failure restarts the Kafka client (with backoff);
        after `max_restarts` failures in a row it raises, so the process can end and be restarted."""
        failures = 0
        broken = False
        while True:
            try:
                if broken:  # inside the try: a restart that fails (broker down) counts as a failure too
                    await self._restart_client()
                    broken = False
                await self._poll_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                if failures > self._max_restarts:
                    log.critical("consume loop failed %d times in a row; giving up", failures, exc_info=True)
                    raise
                log.exception("consume loop failed (%d in a row); restarting the Kafka client", failures)
                metrics.CONSUMER_RESTARTS.labels(self.service).inc()
                self.restarts += 1
                broken = True
                await asyncio.sleep(self._backoff(failures))

    async def _restart_client(self) -> None:
        self.ready = False
        if self._committing is not None:  # the old client's commits: its offsets are replayed, harmlessly
            self._committing.cancel()
            await asyncio.wait({self._committing})
        self._to_commit.clear()
        self._commit_error = None
        await stop_consumer(self._consumer)  # bounded, failures logged: the old client is broken anyway
        self._set_paused_gauges(clear=True)
        self._paused.clear()
        self._consumer = self._new_client()
        self._fetch_wait_ms = self._pacing.idle_wait_ms  # a new client starts with the configured wait
        await self._consumer.start()

    async def _poll_once(self) -> None:
        if self._commit_error is not None:  # as if the commit had failed here: run() restarts the client
            error, self._commit_error = self._commit_error, None
            raise error
        self._resume_due()
        self._pace()
        batches = await self._consumer.getmany(timeout_ms=500, max_records=self._max_batch)
        self.ready = True
        if batches:
            # Before anything awaits: the fetcher builds its next request on its next turn.
            self._note_activity()
        # Read before anything awaits, while the fetch that brought these records is the latest.
        drained = self._drained(batches)
        recorded = self._recorded
        by_topic: dict[str, list[tuple[TopicPartition, list[ConsumerRecord]]]] = {}
        for tp, records in batches.items():
            if tp in self._paused:  # fetched before the pause took hold: fetch again after it
                self._consumer.seek(tp, records[0].offset)
                continue
            by_topic.setdefault(tp.topic, []).append((tp, records))
        for t, parts in enumerate(by_topic.values()):
            last_topic = drained and t == len(by_topic) - 1
            if len(parts) > 1 and await self._apply_together(parts, last_input=last_topic, recorded_before=recorded):
                continue
            for i, (tp, records) in enumerate(parts):
                await self._process_partition_batch(tp, records, last_input=last_topic and i == len(parts) - 1,
                                                    recorded_before=recorded)
        await self._observe_lag()

    def _drained(self, batches: Mapping[TopicPartition, list[ConsumerRecord]]) -> bool:
        """Whether `batches` hold everything the broker had on their partitions when it answered
        (each ends at its partition's high watermark): more input needs a new produce upstream."""
        for tp, records in batches.items():
            high = self._consumer.highwater(tp)
            if high is None or records[-1].offset + 1 < high:
                return False
        return bool(batches)

    async def _process_partition_batch(self, tp: TopicPartition, records: list[ConsumerRecord],
                                       last_input: bool = False, recorded_before: int = 0) -> None:
        try:
            done, deferred = await self._apply_batch(tp.topic, records)
        except Exception as exc:
            # The transaction itself failed (database gone, serialisation): nothing was applied.
            log.warning("batch on %s failed; will replay from offset %d: %s", tp, records[0].offset, exc)
            self._pause(tp, records[0].offset, exc)
            return
        if done:
            # The relay lingers to gather the rounds of several commits into one produce request.
            # After the last records the broker had (`_drained`), the next commit of this consumer
            # is at least a produce and a fetch away, so what this poll emitted goes at once, not
            # after the quiet gap: the decision that follows the campaign's last vote, the answer to
            # a release request. A poll that emitted nothing (the gateway's read model) leaves the
            # relay's linger alone: votes waiting for company keep waiting. A poll that has emitted
            # nothing so far does not wake the relay at all: it would run a round (a transaction of
            # three round trips) to find no row, after each batch of votes the sampler closes leases
            # for and each batch of decisions the gateway records.
            if self._recorded > recorded_before:
                self._relay.notify(at_once=last_input)
            self._commit_soon(tp, records[done - 1].offset + 1)
        if deferred is not None and self._delivery_log:
            delivery.info("%s %s[%d]@%d deferred: %s", self.service, tp.topic, tp.partition,
                          records[done].offset, deferred)
        if deferred is not None:
            self._pause(tp, records[done].offset, deferred)
        else:
            self._paused.pop(tp, None)  # a success ends the backoff series of this partition
            self._attempts.pop(tp, None)

    async def _apply_together(self, parts: list[tuple[TopicPartition, list[ConsumerRecord]]], last_input: bool,
                              recorded_before: int) -> bool:
        """One topic's batches from several partitions of one poll in ONE transaction (the
        one-transaction path of `_apply_batch`, their records partition after partition); False,
        having applied nothing, when they must go partition by partition instead.

        A producer's round (the gateway's votes, every relay linger) lands on every partition of
        its topic at once, so a consumer's poll brings a batch per partition: applied one by one,
        each paid a transaction (its round trips, its synchronous commit) and a handler's fixed
        statements (consensus's three reads and writes per batch of votes) for a few records.
        Events are keyed by study, so no study's events are in two partitions: the order that
        matters, within a partition, is kept. Only handlers without `prepare` take this path
        (a prepared batch is run per partition, as `_apply_batch` prepares it). Any failure or
        `OneByOne` rolls it back and returns False: each partition then takes `_apply_batch`'s
        path, with its own outcomes (deferrals, dead letters, pauses) as before. The connection
        or the database failing pauses every partition at its batch's start, as
        `_process_partition_batch` pauses one."""
        topic = parts[0][0].topic
        handler = self._handlers[topic]
        if handler.prepare is not None:
            return False
        records = [r for _, batch in parts for r in batch]
        decoded = [self._decode(r) for r in records]
        prepared = [_Outcome() for _ in records]
        if not self._fits_one_transaction(records, decoded, prepared):
            return False
        events = [e for e in decoded if isinstance(e, Event)]  # all of them (checked just above)
        seen: list[_Seen] | None = None
        try:
            async with self._pool.connection() as conn:
                try:
                    seen = await self._apply_all(conn, handler, records, events, prepared)
                except OneByOne:
                    pass  # a case the batch-level handler leaves to `apply`: not a failure
                except Exception as exc:
                    if conn.broken:  # Postgres is gone: nothing applied; pause and replay below
                        raise
                    metrics.CONSUMER_BATCH_FALLBACKS.labels(self.service, topic).inc()
                    log.info("batches on %s (%d partitions) failed as one transaction (%s: %s); applying them"
                             " partition by partition", topic, len(parts), type(exc).__name__, exc)
        except Exception as exc:
            for tp, batch in parts:
                log.warning("batch on %s failed; will replay from offset %d: %s", tp, batch[0].offset, exc)
                self._pause(tp, batch[0].offset, exc)
            return True
        if seen is None:
            return False
        self._observe(seen)
        if self._recorded > recorded_before:  # see _process_partition_batch
            self._relay.notify(at_once=last_input)
        for tp, batch in parts:
            self._commit_soon(tp, batch[-1].offset + 1)
            self._paused.pop(tp, None)
            self._attempts.pop(tp, None)
        return True

    def _note_activity(self) -> None:
        """Events were consumed or published just now: fetch with the short wait for a while."""
        if self._pacing.active_wait_ms == self._pacing.idle_wait_ms:
            return
        self._pacing.note_activity(time.monotonic())
        self._pace()

    def _pace(self) -> None:
        """Give the client's next fetch requests the wait that fits now (fetch_pacing.py)."""
        wait = self._pacing.wait_ms(time.monotonic())
        if wait != self._fetch_wait_ms and self.ready:  # ready: the client is started
            set_fetch_wait(self._consumer, wait)
            self._fetch_wait_ms = wait

    def _pause(self, tp: TopicPartition, offset: int, error: BaseException) -> None:
        """Seek back to `offset` and stop fetching `tp` until the backoff has passed."""
        attempt = self._attempts.get(tp, 0) + 1
        self._attempts[tp] = attempt
        delay = self._backoff(attempt)
        self._paused[tp] = _Pause(offset, attempt, time.monotonic() + delay, f"{type(error).__name__}: {error}"[:500])
        try:
            self._consumer.seek(tp, offset)
            self._consumer.pause(tp)
        except Exception:  # noqa: BLE001 - revoked meanwhile: the new owner replays from the commit
            self._paused.pop(tp, None)
        metrics.CONSUMER_BACKOFFS.labels(self.service, tp.topic).inc()
        self._set_paused_gauges()
        log.warning("%s paused at offset %d for %.1fs (attempt %d): %s", tp, offset, delay, attempt, error)

    def _backoff(self, attempt: int) -> float:
        """Exponential, capped, with jitter so that many consumers do not retry in step."""
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    def _resume_due(self) -> None:
        now = time.monotonic()
        assigned = self._consumer.assignment()
        for tp, pause in list(self._paused.items()):
            if tp not in assigned:
                del self._paused[tp]  # revoked: whoever owns it now starts from the committed offset
            elif pause.until <= now:
                del self._paused[tp]
                self._consumer.resume(tp)
        self._set_paused_gauges()

    def _set_paused_gauges(self, clear: bool = False) -> None:
        counts: dict[str, int] = {topic: 0 for topic in self._handlers}
        if not clear:
            for tp in self._paused:
                counts[tp.topic] = counts.get(tp.topic, 0) + 1
        for topic, n in counts.items():
            metrics.CONSUMER_PAUSED.labels(self.service, topic).set(n)

    def _commit_soon(self, tp: TopicPartition, offset: int) -> None:
        """Commit `offset` for `tp` (its records' transaction has committed) without the next poll
        waiting for it. An offset commit is a broker round trip (tansu writes it to its S3 store:
        4-35 ms at load 10 in one trace, session 11), and awaited it held the next batch — the decision after a
        campaign's last vote waited behind the offset commits of the batches before it. One task
        commits, in order, the latest offset of each partition (commits queued meanwhile go as one
        request); the offset still moves only after the transaction, so a crash replays as before."""
        self._to_commit[tp] = offset
        if self._committing is None or self._committing.done():
            self._committing = asyncio.create_task(self._commit_pending(self._consumer))

    async def _commit_pending(self, client: AIOKafkaConsumer) -> None:
        while self._to_commit:
            offsets, self._to_commit = self._to_commit, {}
            try:
                await client.commit(offsets)
                if self._delivery_log:
                    for tp, offset in offsets.items():
                        delivery.info("%s %s[%d] committed offset %d", self.service, tp.topic, tp.partition, offset)
            except KafkaError as exc:
                # Typically CommitFailedError after a rebalance: the partition moved on, its new owner
                # replays from the last committed offset and the inbox turns the replay into no-ops.
                log.warning("offset commit for %s failed (%s); the records will be replayed, harmlessly",
                            ", ".join(str(tp) for tp in offsets), exc)
            except Exception as exc:  # noqa: BLE001 - handed to the consume loop, which restarts the client
                self._commit_error = exc
                return

    async def _apply_batch(self, topic: str, records: list[ConsumerRecord]) -> tuple[int, BaseException | None]:
        """Apply records in order until one must wait for a dependency. Returns how many records
        now have an outcome, and the transient error that stopped the batch (None: all done).

        Optimistic first: the whole batch in one transaction without savepoints (`_apply_all`).
        Should anything in it fail, that transaction rolls back whole and the batch is applied again
        record by record, each in its own savepoint (`_apply_each`), so a poison record goes to the
        dead-letter topic alone and the others still commit. Metrics and delivery-log lines are
        recorded only once the transaction that holds the outcomes has committed."""
        handler = self._handlers[topic]
        decoded = [self._decode(r) for r in records]
        prepared = await self._prepare_all(handler, decoded)
        # Records after a deferred one wait too: they may be later events of the same study.
        cut = next((i for i, p in enumerate(prepared) if p.transient), len(records))
        deferred: BaseException | None = prepared[cut].error if cut < len(records) else None
        if cut == 0:
            return 0, deferred
        async with self._pool.connection() as conn:
            if self._fits_one_transaction(records[:cut], decoded[:cut], prepared[:cut]):
                try:
                    seen = await self._apply_all(conn, handler, records[:cut], decoded[:cut], prepared[:cut])
                except OneByOne:
                    pass  # a case the batch-level handler leaves to `apply`: not a failure
                except Exception as exc:
                    if conn.broken:  # Postgres is gone: nothing applied; the caller pauses and replays
                        raise
                    metrics.CONSUMER_BATCH_FALLBACKS.labels(self.service, topic).inc()
                    log.info("batch on %s[%d]@%d failed as one transaction (%s: %s); applying it record by record",
                             topic, records[0].partition, records[0].offset, type(exc).__name__, exc)
                else:
                    self._observe(seen)
                    return cut, deferred
            done, deferred, seen = await self._apply_each(conn, handler, records[:cut], decoded, prepared, deferred)
        self._observe(seen)
        return done, deferred

    def _fits_one_transaction(self, records: list[ConsumerRecord], decoded: list[Any],
                              prepared: list[_Outcome]) -> bool:
        """Only plain, decodable, prepared events take the one-transaction path. A record already
        known to be a dead letter, or a dead letter's replay (its inbox row is overwritten, not
        inserted: rare, and worth no second code path), goes record by record at once."""
        return all(not isinstance(e, Exception) and p.error is None and deadletters.replay_id(r) is None
                   for r, e, p in zip(records, decoded, prepared, strict=True))

    async def _apply_all(self, conn: psycopg.AsyncConnection, handler: Handler, records: list[ConsumerRecord],
                         events: list[Event], prepared: list[_Outcome]) -> list[_Seen]:
        """The whole batch in one transaction, pipelined: one inbox statement for every record (its
        RETURNING says which events are new), the handlers, one outbox statement for every emitted
        event (in record order, as before). Any failure propagates and rolls the transaction back
        whole."""
        started = time.perf_counter()
        own: list[float] = []
        seen: list[_Seen] = []
        # In pipeline mode a statement whose result is not read is sent without waiting for it:
        # the handlers' writes travel together, up to the next read. An error then surfaces at
        # that read or at the end, not at the statement; here any error means "fall back" anyway.
        async with conn.pipeline(), conn.transaction() as tx:
            newly_durable = await self._synchronous(conn)
            async with conn.cursor(row_factory=tuple_row) as cur:
                await cur.execute(_INBOX_MANY, (records[0].topic, [e.event_id for e in events]))
                fresh = {row[0] for row in await cur.fetchall()}
            emitted: list[Event] = []
            if handler.apply_many is not None:
                new: list[Event] = []
                new_prepared: list[Any] = []
                for record, event, prep in zip(records, events, prepared, strict=True):
                    if event.event_id in fresh:
                        fresh.discard(event.event_id)  # a second copy later in this batch is a duplicate
                        new.append(event)
                        new_prepared.append(prep.result)
                        seen.append(_Seen(record, event.event_id, "applied"))
                    else:
                        seen.append(_Seen(record, event.event_id, "duplicate"))
                    own.append(0.0)  # the batch's time is shared out evenly below
                if new:
                    emitted.extend(await handler.apply_many(conn, new, new_prepared))
            else:
                for record, event, prep in zip(records, events, prepared, strict=True):
                    began = time.perf_counter()
                    if event.event_id in fresh:
                        fresh.discard(event.event_id)  # a second copy later in this batch is a duplicate
                        emitted.extend(await handler.apply(conn, event, prep.result) or ())
                        seen.append(_Seen(record, event.event_id, "applied"))
                    else:
                        seen.append(_Seen(record, event.event_id, "duplicate"))
                    own.append(time.perf_counter() - began)
            await outbox.record(conn, emitted)
            self._recorded += len(emitted)
        self._committed(tx, conn, newly_durable, None)
        shared = (time.perf_counter() - started - sum(own)) / len(seen)
        for item, seconds in zip(seen, own, strict=True):
            item.seconds = seconds + shared
        return seen

    async def _apply_each(self, conn: psycopg.AsyncConnection, handler: Handler, records: list[ConsumerRecord],
                          decoded: list[Any], prepared: list[_Outcome], deferred: BaseException | None,
                          ) -> tuple[int, BaseException | None, list[_Seen]]:
        """Record by record, each in its own savepoint, in one transaction: the fallback path."""
        done = len(records)
        seen: list[_Seen] = []
        async with conn.transaction() as tx:
            newly_durable = await self._synchronous(conn)
            for i, record in enumerate(records):
                try:
                    await self._apply_one(conn, handler, record, decoded[i], prepared[i], seen)
                except _Deferred as exc:
                    done, deferred = i, exc.cause  # the transaction commits the records before i
                    break
        self._committed(tx, conn, newly_durable, deferred)
        return done, deferred, seen

    async def _synchronous(self, conn: psycopg.AsyncConnection) -> bool:
        """Make the connection's commits synchronous, once per connection (see the module's
        docstring). A session-level SET inside the batch's transaction lasts once that transaction
        commits, so later batches on this connection need no extra round trip; should it roll
        back, the SET goes with it and the next batch sets it again. (Service pools already set it
        when they connect, `db._durable`; this keeps the consumer durable on any pool. Nothing
        sets it back at session level.) True when this transaction sets it."""
        if conn in self._durable_connections:
            return False
        await conn.execute("SET synchronous_commit = on")
        return True

    def _committed(self, tx: psycopg.AsyncTransaction, conn: psycopg.AsyncConnection, newly_durable: bool,
                   deferred: BaseException | None) -> None:
        # psycopg leaves a transaction block on a connection it already knows is broken WITHOUT an
        # error and without committing (status FAILED): that is how a batch deferred because
        # Postgres died "committed" its records and the offset moved past them, lost (the fault
        # test's lost votes). Only a transaction that really committed lets the offset move.
        if tx.status is not tx.Status.COMMITTED:
            raise BatchNotCommitted(f"the batch's transaction ended {tx.status.value}, not committed"
                                    + (f" ({deferred})" if deferred is not None else ""))
        if newly_durable:
            self._durable_connections.add(conn)

    def _observe(self, seen: list[_Seen]) -> None:
        """Metrics and delivery-log lines for outcomes that are now committed."""
        for item in seen:
            record = item.record
            self._trace(record, item.event_id, item.outcome)
            metrics.child(metrics.EVENTS_CONSUMED, self.service, record.topic, item.outcome).inc()
            if item.outcome == "dead_lettered":
                log.error("dead-lettered %s to %s.dlq: %s", item.event_id, record.topic, item.error)
                metrics.DLQ_EVENTS.labels(self.service, record.topic).inc()
            elif item.seconds is not None:
                metrics.child(metrics.EVENT_PROCESSING, self.service, record.topic).observe(item.seconds)

    def _decode(self, record: ConsumerRecord) -> Event | PermanentError:
        if record.value is None:
            return PermanentError("cannot decode message: a tombstone (null value) is not an event")
        try:
            return decode_event(record.value, record.topic)
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
                         record: ConsumerRecord, event: Any, prep: _Outcome, seen: list[_Seen]) -> None:
        started = time.perf_counter()
        if isinstance(event, Exception) or prep.error is not None:
            # Undecodable, or `prepare` failed for good (a transient failure never gets here: the
            # batch stops before it). `apply` never runs without its prepared value.
            cause = event if isinstance(event, Exception) else prep.error
            attempts = 0 if isinstance(event, Exception) else (
                1 if isinstance(cause, PermanentError) else self._max_attempts)
            await self._dead_letter(conn, record, event, cause, attempts, seen)
            return
        failure: BaseException | None = None
        attempt = 0
        while failure is None or (not isinstance(failure, PermanentError) and attempt < self._max_attempts):
            attempt += 1
            try:
                outcome = await self._try_apply(conn, handler, record, event, prep.result)
                seen.append(_Seen(record, event.event_id, outcome, seconds=time.perf_counter() - started))
                return
            except Exception as exc:
                failure = exc
                metrics.EVENTS_CONSUMED.labels(self.service, record.topic, "retried").inc()
                self._trace(record, event.event_id, f"retried:{type(exc).__name__}")
                log.warning("applying %s@%d failed (attempt %d): %s", record.topic, record.offset, attempt, exc)
                if attempt < self._max_attempts:
                    await asyncio.sleep(0.05 * 2**attempt)
        if is_transient(failure):
            metrics.EVENTS_CONSUMED.labels(self.service, record.topic, "deferred").inc()
            raise _Deferred(failure)
        await self._dead_letter(conn, record, event, failure, attempt, seen)

    async def _try_apply(self, conn: psycopg.AsyncConnection, handler: Handler,
                         record: ConsumerRecord, event: Event, prepared: Any) -> str:
        async with conn.transaction():  # a savepoint: a failure here leaves the batch intact
            cur = await conn.execute(
                "INSERT INTO inbox (event_id, topic, outcome) VALUES (%s, %s, 'applied')"
                " ON CONFLICT (event_id) DO UPDATE SET outcome = 'applied', received_at = now()"
                "   WHERE inbox.outcome = 'dead_lettered' AND %s"
                " RETURNING event_id",
                (event.event_id, record.topic, deadletters.is_replay_for(record, self.service)),
            )
            if await cur.fetchone() is None:
                return "duplicate"
            emitted = list(await handler.apply(conn, event, prepared) or ())
            await outbox.record(conn, emitted)
            self._recorded += len(emitted)
        return "applied"

    async def _dead_letter(self, conn: psycopg.AsyncConnection, record: ConsumerRecord,
                           event: Any, error: BaseException | None, attempts: int, seen: list[_Seen]) -> None:
        event_id = deadletters.pg_text(event.event_id if isinstance(event, Event)
                                       else f"{record.topic}:{record.partition}:{record.offset}")
        letter = deadletters.letter(self.service, record, event_id, error, attempts)
        try:
            async with conn.transaction():
                if not await self._mark_dead(conn, record, event_id):
                    return
                await outbox.record_raw(conn, f"{record.topic}.dlq", letter["msg_key"], letter["event_id"], letter,
                                        limit=deadletters.MAX_LETTER_BYTES)
        except Exception:  # noqa: BLE001 - the dead-letter path must not itself poison the partition
            log.exception("full dead letter for %s refused; recording a minimal one", event_id)
            letter = deadletters.minimal(letter)
            async with conn.transaction():
                if not await self._mark_dead(conn, record, event_id):
                    return
                await outbox.record_raw(conn, f"{record.topic}.dlq", letter["msg_key"], letter["event_id"], letter,
                                        limit=deadletters.MAX_LETTER_BYTES)
        self._recorded += 1
        seen.append(_Seen(record, event_id, "dead_lettered", error=letter["error"]))

    def _trace(self, record: ConsumerRecord, event_id: str, outcome: str) -> None:
        """The delivery log's line for one record: where it came from, which event, what became of it
        (written once the batch's transaction committed; "retried" lines as they happen)."""
        if self._delivery_log:
            delivery.info("%s %s[%d]@%d %s %s", self.service, record.topic, record.partition, record.offset,
                          event_id, outcome)

    async def _mark_dead(self, conn: psycopg.AsyncConnection, record: ConsumerRecord, event_id: str) -> bool:
        """Record the dead-lettered outcome; False if this event already has an outcome (a redelivery)."""
        cur = await conn.execute(
            "INSERT INTO inbox (event_id, topic, outcome) VALUES (%s, %s, 'dead_lettered')"
            " ON CONFLICT (event_id) DO UPDATE SET outcome = 'dead_lettered', received_at = now()"
            "   WHERE inbox.outcome = 'dead_lettered' AND %s"
            " RETURNING event_id",
            (event_id, record.topic, deadletters.is_replay_for(record, self.service)),
        )
        return await cur.fetchone() is not None

    async def _observe_lag(self) -> None:
        lag: dict[str, int] = {}
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = await self._consumer.position(tp)
            except KafkaError:  # revoked between assignment() and position(): a rebalance, not a failure
                continue
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, high - position)
        for topic, value in lag.items():
            metrics.CONSUMER_LAG.labels(self.service, topic).set(value)
