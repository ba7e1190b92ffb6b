"""Leases on reads: an assignment not voted within its lease moves to another eligible reader.

The sampler owns who reads what, so it alone decides a move; the gateway owns votes, so it alone
decides whether a vote beat the move. Both sides stay consistent because the gateway applies a
`ReviewReoffered` only while the old read is still open, and otherwise keeps the vote — which the
sampler then sees as a `VoteCast` from the old reader and undoes its side of the move.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

from services.common import outbox
from services.common.contracts import ReviewReoffered, VoteCast
from services.common.db import unit_of_work
from services.common.runtime import Resources
from services.sampler import repo
from services.sampler.assignment import reoffer

log = logging.getLogger(__name__)


async def move_read(conn: psycopg.AsyncConnection, study_id: str, from_reader: str, reason: str,
                    lease_seconds: float, to_reader: str | None = None) -> ReviewReoffered | None:
    """Move an open read to `to_reader` (or the least-loaded eligible reader); None if it cannot move.

    Never to anyone who ever had the study, never past a reader's capacity or into their exclusions.
    When nobody is eligible the old reader keeps the study for another lease.
    """
    lease = await repo.lock_lease(conn, study_id, from_reader)
    if lease is None or lease["status"] != "open":
        return None
    limits = await repo.run_limits(conn, lease["run_id"])
    lease_seconds = limits["plan"].get("lease_seconds") or lease_seconds
    current, ever = await repo.study_readers(conn, study_id)
    load = await repo.reader_load(conn)
    capacity = limits["capacity"]
    exclusions = {r: set(s) for r, s in limits["exclusions"].items()}
    open_panel = [r for r in limits["panel"] if load.get(r, 0) < capacity.get(r, float("inf"))]
    if to_reader is not None:
        open_panel = [r for r in open_panel if r == to_reader]
    chosen = reoffer(study_id, sorted(ever), from_reader, open_panel, load, exclusions)
    if chosen is None:
        await repo.extend_lease(conn, study_id, from_reader, lease_seconds)
        log.warning("no eligible reader to take %s from %s; lease extended", study_id, from_reader)
        return None
    readers = sorted([r for r in current if r != from_reader] + [chosen])
    await repo.move_lease(conn, study_id, from_reader, chosen, lease["run_id"], readers, lease_seconds)
    return ReviewReoffered(study_id=study_id, protocol=limits["protocol"], run_id=lease["run_id"],
                           from_reader=from_reader, to_reader=chosen, readers=readers, reason=reason)


async def on_vote(conn: psycopg.AsyncConnection, vote: VoteCast) -> ReviewReoffered | None:
    """Close the voter's lease. A vote on a read the sampler had already moved means the gateway
    kept the vote and ignored the move: undo the move on this side too, and announce the undoing
    (a review-reoffered back to the voter) so that consensus counts the vote instead of waiting
    for a reader who never got the study (issue 11 §5)."""
    lease = await repo.close_lease(conn, vote.study_id, vote.reader_id)  # None: no lease, or voted already
    if lease is None or lease["status"] != "expired" or not lease["replaced_by"]:
        return None
    current, _ = await repo.study_readers(conn, vote.study_id)
    replaced_by = lease["replaced_by"]
    readers = sorted([r for r in current if r != replaced_by] + [vote.reader_id])
    await repo.set_lease_status(conn, vote.study_id, replaced_by, "cancelled")
    await repo.set_readers(conn, vote.study_id, readers)
    limits = await repo.run_limits(conn, lease["run_id"])
    return ReviewReoffered(
        study_id=vote.study_id, correlation_id=vote.correlation_id, protocol=limits["protocol"],
        run_id=lease["run_id"], from_reader=replaced_by, to_reader=vote.reader_id, readers=readers,
        reason=f"move undone: {vote.reader_id}'s vote beat it")


async def sweep_once(res: Resources) -> int:
    """Move every read whose lease has run out; returns how many moved."""
    moved = []
    async with unit_of_work(res.pool) as conn:
        for lease in await repo.due_leases(conn):
            event = await move_read(conn, lease["study_id"], lease["reader_id"], "lease expired",
                                    res.settings.lease_seconds)
            if event is not None:
                moved.append(event)
        await outbox.record(conn, moved)
    if moved:
        res.relay.notify()
    return len(moved)


async def sweep_loop(res: Resources) -> None:
    """Runs for the life of the process; a failed sweep is retried at the next tick."""
    while True:
        try:
            await sweep_once(res)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a DB blip must not end the sweeper
            log.exception("lease sweep failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.sleep(res.settings.lease_sweep_seconds)
