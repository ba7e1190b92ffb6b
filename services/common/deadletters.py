"""Dead letters: what a letter holds, and how an operator lists, reads and replays them.

A letter is written by the consumer (through the outbox) to `<topic>.dlq` when an event cannot
be applied. It keeps the original message byte for byte (UTF-8 text when it is clean, base64
otherwise — Postgres refuses NUL in text and jsonb, so a NUL byte must never reach a column).

A replay republishes the original event, same event_id, to its original topic with the header
`radcurate-replay: <replay_id>`. The consumer's inbox lets a replayed event through only if its
earlier outcome was a dead letter, so replaying an event that has since been applied is a no-op.
Each replay is recorded in `dead_letter_replays`, in the same transaction as the outbox row
that republishes it.
"""

from __future__ import annotations

import base64
import json
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from services.common import outbox
from services.common.kafka import KafkaConnection, client_options, stop_consumer

REPLAY_HEADER = "radcurate-replay"
# Which service's dead letter the replay re-drives: other services subscribed to the same topic
# treat the replayed event as the duplicate it is for them.
REPLAY_SERVICE_HEADER = "radcurate-replay-service"
DLQ_SUFFIX = ".dlq"
# A letter carries the original message only up to this size; beyond it the letter says so and
# the message is still in its original topic at the recorded partition and offset.
MAX_LETTER_PAYLOAD = outbox.MAX_EVENT_BYTES
# A letter holds an event of up to MAX_EVENT_BYTES plus its error, escaped or base64-encoded:
# allowed to be larger than an event, still under Kafka's default 1 MiB message limit.
MAX_LETTER_BYTES = 900 * 1024
_MAX_TRACEBACK = 16_000


def pg_text(value: str) -> str:
    """`value` as Postgres text/jsonb accepts it: no NUL, no lone surrogates."""
    return value.encode("utf-8", errors="replace").decode("utf-8").replace("\x00", "\ufffd")


def _header(record: ConsumerRecord, name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name and value:
            return pg_text(value.decode("utf-8", errors="replace"))
    return None


def replay_id(record: ConsumerRecord) -> str | None:
    """The replay id a replayed message carries in its headers, if any."""
    return _header(record, REPLAY_HEADER)


def is_replay_for(record: ConsumerRecord, service: str) -> bool:
    """True when `record` is a replay of a dead letter that `service` wrote."""
    return replay_id(record) is not None and _header(record, REPLAY_SERVICE_HEADER) in (None, service)


def _payload(value: bytes | None) -> tuple[str | None, str]:
    if value is None:
        return None, "tombstone"
    if len(value) > MAX_LETTER_PAYLOAD:
        return None, "omitted"
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(value).decode(), "base64"
    if "\x00" in text:
        return base64.b64encode(value).decode(), "base64"
    return text, "text"


def letter(service: str, record: ConsumerRecord, event_id: str, error: BaseException | None,
           attempts: int) -> dict[str, Any]:
    """The dead letter for `record`; every string in it is safe for Postgres."""
    replay = replay_id(record) if is_replay_for(record, service) else None
    payload, encoding = _payload(record.value)
    key = record.key or b""
    return {
        "event_id": f"dlq:{service}:{event_id}" + (f":{replay}" if replay else ""),
        "original_event_id": event_id,
        "original_topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "service": service,
        "error": pg_text(f"{type(error).__name__}: {error}")[:4000],
        "traceback": pg_text("".join(traceback.format_exception(error)))[-_MAX_TRACEBACK:] if error else "",
        "attempts": attempts,
        "failed_at": datetime.now(UTC).isoformat(),
        "msg_key": pg_text(key.decode("utf-8", errors="replace")),
        "key_base64": base64.b64encode(key).decode(),
        "payload": payload,
        "payload_encoding": encoding,
        "replay_id": replay,
    }


def minimal(full: dict[str, Any]) -> dict[str, Any]:
    """A letter stripped to what cannot fail: ids and the error, no payload or traceback."""
    return {**full, "payload": None, "payload_encoding": "omitted", "traceback": "", "error": full["error"][:500]}


def original_bytes(item: dict[str, Any]) -> bytes:
    """The original message of a letter, exactly; ValueError when the letter does not hold it."""
    encoding = item.get("payload_encoding", "text")
    if encoding == "text":
        return item["payload"].encode("utf-8")
    if encoding == "base64":
        return base64.b64decode(item["payload"])
    if encoding == "tombstone":
        raise ValueError("the dead letter is a tombstone (null value): there is no event to replay")
    raise ValueError(f"the letter does not hold the message; it is in {item['original_topic']}"
                     f" partition {item['partition']} offset {item['offset']}")


# --- reading the dead-letter topics ---------------------------------------------------------


@dataclass(frozen=True)
class LetterQuery:
    topic: str | None = None  # the original topic (without .dlq)
    since: datetime | None = None
    letter_id: str | None = None  # a letter's event_id, or the original event_id


async def read_letters(bootstrap: KafkaConnection | str, query: LetterQuery = LetterQuery(),
                       timeout_s: float = 10.0) -> list[dict]:
    """Every dead letter on the `.dlq` topics that matches, oldest first, each once.

    Reads the topics from the beginning up to the high watermark that the fetches themselves
    report, with no consumer group, so it changes nothing on the broker. Not up to ListOffsets'
    end: tansu 0.6.0 (S3 engine) answers that from the newest batch object's 1-second timestamp,
    so it can lag the log by several records and the newest dead letters would be missed
    (tests/support/tansu_kill_probe.py --variant listoffsets)."""
    client = AIOKafkaConsumer(**client_options(bootstrap), enable_auto_commit=False, group_id=None,
                              auto_offset_reset="earliest", request_timeout_ms=int(timeout_s * 1000))
    await client.start()
    try:
        topics = sorted(t for t in await client.topics() if t.endswith(DLQ_SUFFIX)
                        and (query.topic is None or t == f"{query.topic}{DLQ_SUFFIX}"))
        parts = [TopicPartition(t, p) for t in topics for p in sorted(client.partitions_for_topic(t) or ())]
        if not parts:
            return []
        client.assign(parts)
        await client.seek_to_beginning(*parts)
        letters: dict[str, dict] = {}
        pending = set(parts)
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError("the dead-letter topics did not answer in time")
            batch = await client.getmany(*pending, timeout_ms=200)
            for records in batch.values():
                for rec in records:
                    if rec.value is not None:
                        item = json.loads(rec.value)
                        letters.setdefault(item["event_id"], item)
            for tp in list(pending):
                high = client.highwater(tp)  # from the last fetch response: None until one came
                if high is not None and await client.position(tp) >= high:
                    pending.discard(tp)
    finally:
        await stop_consumer(client)
    return sorted((item for item in letters.values() if _matches(item, query)), key=lambda i: i["failed_at"])


def _matches(item: dict, query: LetterQuery) -> bool:
    if query.letter_id and query.letter_id not in (item["event_id"], item.get("original_event_id")):
        return False
    if query.since and datetime.fromisoformat(item["failed_at"]) < query.since:
        return False
    return True


def summary(item: dict) -> dict[str, Any]:
    """A letter without its payload and traceback: one line of a list."""
    return {k: item.get(k) for k in ("event_id", "original_event_id", "original_topic", "partition", "offset",
                                      "service", "error", "attempts", "failed_at", "payload_encoding", "replay_id")}


# --- replaying ------------------------------------------------------------------------------


async def replay(conn: psycopg.AsyncConnection, item: dict, requested_by: str, reason: str = "") -> dict[str, Any]:
    """Record a replay of the letter `item` and queue its original event, same event_id, for the
    original topic (in the caller's transaction). ValueError when it cannot be replayed."""
    raw = original_bytes(item)
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"the original message is not JSON ({exc}); a replay would fail the same way") from None
    if not isinstance(payload, dict) or "\x00" in raw.decode("utf-8", errors="replace"):
        raise ValueError("the original message is not a JSON object Postgres can hold; it cannot be replayed")
    rid = f"replay-{uuid.uuid4().hex[:12]}"
    await conn.execute(
        "INSERT INTO dead_letter_replays (replay_id, letter_id, original_event_id, original_topic, requested_by,"
        " reason) VALUES (%s, %s, %s, %s, %s, %s)",
        (rid, item["event_id"], item["original_event_id"], item["original_topic"], requested_by, pg_text(reason)))
    key = base64.b64decode(item["key_base64"]).decode("utf-8", errors="replace") if item.get("key_base64") \
        else item.get("msg_key", "")
    # The outbox row needs its own id (the original event_id may already be in this outbox);
    # the message itself keeps the original event_id.
    await outbox.record_raw(conn, item["original_topic"], key, rid, payload,
                            headers={REPLAY_HEADER: rid, REPLAY_SERVICE_HEADER: item["service"]})
    return {"replay_id": rid, "letter_id": item["event_id"], "original_event_id": item["original_event_id"],
            "original_topic": item["original_topic"]}


async def replays_of(conn: psycopg.AsyncConnection, letter_ids: list[str]) -> dict[str, list[dict]]:
    """The recorded replays of these letters, by letter id."""
    cur = await conn.execute(
        "SELECT replay_id, letter_id, requested_by, reason, replayed_at FROM dead_letter_replays"
        " WHERE letter_id = ANY(%s) ORDER BY replayed_at", (letter_ids,))
    out: dict[str, list[dict]] = {}
    for row in await cur.fetchall():
        out.setdefault(row["letter_id"], []).append({**row, "replayed_at": row["replayed_at"].isoformat()})
    return out
