"""Operators: list, read and replay dead letters (`radcurate dlq` calls these).

The letters live on the `<topic>.dlq` topics; the gateway reads them with no consumer group (so
reading changes nothing) and replays through its own outbox, recording each replay.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, status
from pydantic import Field

from services.common import deadletters
from services.common.db import unit_of_work
from services.common.kafka import KafkaConnection
from services.gateway.api.models import RequestBody
from services.gateway.auth import Admin
from services.gateway.deps import Res
from services.gateway.problems import Problem

router = APIRouter(prefix="/api/v1/admin/dead-letters", tags=["operations"])


class ReplayIn(RequestBody):
    reason: str = Field("", max_length=2000, description="Why it is safe now: the fix that was deployed.")


async def _letters(res, query: deadletters.LetterQuery) -> list[dict]:
    try:
        return await deadletters.read_letters(KafkaConnection.from_settings(res.settings), query)
    except (TimeoutError, OSError) as exc:
        raise Problem(503, f"the broker did not answer: {type(exc).__name__}") from None


@router.get("")
async def list_dead_letters(_: Admin, res: Res,
                            topic: Annotated[str | None, Query(description="Original topic, without .dlq")] = None,
                            since: Annotated[datetime | None, Query(description="ISO 8601, with a time zone")] = None,
                            id: Annotated[str | None, Query(description="A letter's or its event's id")] = None,
                            ) -> list[dict]:
    """Dead letters, oldest first, without payloads, each with the replays it already had."""
    if since is not None and since.tzinfo is None:
        raise Problem(422, "since must carry a time zone, e.g. 2026-01-31T00:00:00Z")
    items = await _letters(res, deadletters.LetterQuery(topic, since, id))
    async with res.pool.connection() as conn:
        replays = await deadletters.replays_of(conn, [i["event_id"] for i in items])
    return [{**deadletters.summary(i), "replays": replays.get(i["event_id"], [])} for i in items]


async def _one(res, letter_id: str) -> dict:
    items = await _letters(res, deadletters.LetterQuery(letter_id=letter_id))
    if not items:
        raise Problem(404, f"no dead letter {letter_id!r}")
    if len(items) > 1:
        raise Problem(409, f"{len(items)} letters match {letter_id!r} (one per failed try); use a letter id",
                      letter_ids=[i["event_id"] for i in items])
    return items[0]


@router.get("/{letter_id}")
async def get_dead_letter(letter_id: str, _: Admin, res: Res) -> dict:
    """One letter in full: error, traceback, original message and replays."""
    item = await _one(res, letter_id)
    async with res.pool.connection() as conn:
        replays = await deadletters.replays_of(conn, [item["event_id"]])
    return {**item, "replays": replays.get(item["event_id"], [])}


@router.post("/{letter_id}/replay", status_code=status.HTTP_202_ACCEPTED)
async def replay_dead_letter(letter_id: str, body: ReplayIn, user: Admin, res: Res) -> dict:
    """Republish the original event (same event_id) to its topic, once the cause is fixed.
    Idempotent in effect: an event that has since been applied is skipped by the inbox."""
    item = await _one(res, letter_id)
    try:
        async with unit_of_work(res.pool) as conn:
            done = await deadletters.replay(conn, item, requested_by=user.user_id, reason=body.reason)
    except ValueError as exc:
        raise Problem(422, f"cannot replay {item['event_id']}: {exc}") from None
    res.relay.notify()
    return done
