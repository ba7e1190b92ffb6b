"""labels-suggested → the pool; sampling-requested → review-assigned (one per sampled study) and
sampling-completed; vote-cast closes a read's lease; reassignment-requested → review-reoffered."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import psycopg

from services.common import metrics, protocols
from services.common.consumer import Handler, OneByOne
from services.common.contracts import (
    Event,
    LabelsSuggested,
    ReassignmentRequested,
    ReviewAssigned,
    ReviewReoffered,
    SamplingCompleted,
    SamplingRequested,
    Topic,
    VoteCast,
)
from services.common.protocols.kit.sampling import SampleResult
from services.common.runtime import Resources
from services.sampler import leases, repo
from services.sampler.assignment import assign_readers

if TYPE_CHECKING:  # app.py imports this module
    from services.sampler.app import SamplerSettings

DEFAULT_LEASE_SECONDS = 72 * 3600.0


async def on_labels_suggested(conn: psycopg.AsyncConnection, event: LabelsSuggested, _: Any,
                              lease_seconds: float = DEFAULT_LEASE_SECONDS) -> list[Event]:
    """Add a study to the candidate pool; run parked sampling requests the pool now satisfies."""
    emitted: list[Event] = []
    for cmd in await repo.add_candidate(conn, event):  # the parked requests, oldest first
        if await repo.pool_size(conn, cmd.protocol) >= cmd.min_pool_size:
            await repo.unpark_run(conn, cmd.run_id)
            emitted += await run_sampling(conn, cmd, lease_seconds)
    return emitted


async def on_labels_suggested_many(conn: psycopg.AsyncConnection, events: list[LabelsSuggested],
                                   _: list[Any]) -> list[Event]:
    """A batch of suggestions with the effects of `on_labels_suggested` on each in order, while no
    sampling request is parked (the common case: one statement adds the whole batch to the pool).
    A parked request (its draw must see the pool as it was when each suggestion arrived) or a
    study twice in the batch makes the batch go one by one (`OneByOne`)."""
    if len({e.study_id for e in events}) < len(events):
        raise OneByOne
    if await repo.add_candidates(conn, events):
        raise OneByOne
    return []


async def on_sampling_requested(conn: psycopg.AsyncConnection, cmd: SamplingRequested, _: Any,
                                lease_seconds: float = DEFAULT_LEASE_SECONDS) -> list[Event]:
    """Draw the sample now, or park the request until the pool is as large as it asks."""
    if await repo.run_exists(conn, cmd.run_id):
        return []
    if await repo.pool_size(conn, cmd.protocol) < cmd.min_pool_size:
        await repo.park_run(conn, cmd)
        return []
    return await run_sampling(conn, cmd, lease_seconds)


async def run_sampling(conn: psycopg.AsyncConnection, cmd: SamplingRequested,
                       lease_seconds: float = DEFAULT_LEASE_SECONDS) -> list[Event]:
    """Draw the sample, assign K readers per study, announce each assignment and the run's outcome.

    A run that cannot be done (empty pool, too small a panel) is reported back as a failed
    `SamplingCompleted` instead of only a dead letter, so the curator who asked learns why.
    """
    started = time.perf_counter()
    pool = await repo.unsampled_pool(conn, cmd.protocol)  # without instance lists: the draw needs none
    pool_size = len(pool)
    result = draw(cmd, pool)
    del pool  # the selected studies' whole suggestions are read below; the rest of the pool can go
    if not result.selected:
        return [_failed(cmd, "the pool has no unsampled studies")]
    try:
        readers = assign_readers(
            [sel.study_id for sel in result.selected], cmd.panel, cmd.plan.readers_per_study,
            seed=cmd.plan.seed, existing_load=await repo.reader_load(conn), capacity=cmd.capacity,
            exclusions={r: set(s) for r, s in cmd.exclusions.items()},
        )
    except ValueError as exc:
        return [_failed(cmd, str(exc))]
    seconds = time.perf_counter() - started
    tiers = {str(k): v for k, v in result.tier_counts.items()}
    suggestions = await repo.suggestions_of(conn, [sel.study_id for sel in result.selected])
    await repo.save_run(conn, cmd, pool_size, len(result.selected), result.unmet_quotas, tiers, seconds)
    rows = [(sel.study_id, sel.stratum, sel.quota, sel.difficulty.value, sel.reason, json.dumps(readers[sel.study_id]))
            for sel in result.selected]
    await repo.save_sampled(conn, cmd.run_id, rows)
    await repo.save_run_limits(conn, cmd, result.label_counts)
    await repo.open_leases(conn, cmd.run_id, readers, cmd.plan.lease_seconds or lease_seconds)
    metrics.SAMPLING_RUN.observe(seconds)
    done = SamplingCompleted(
        study_id=cmd.run_id, correlation_id=cmd.correlation_id, run_id=cmd.run_id, protocol=cmd.protocol,
        pool_size=pool_size, n_selected=len(result.selected), unmet_quotas=result.unmet_quotas,
        tiers=tiers, label_counts=result.label_counts, seconds=seconds)
    return [*(_assigned(cmd, suggestions[sel.study_id], sel, readers[sel.study_id]) for sel in result.selected), done]


def draw(cmd: SamplingRequested, pool: list[LabelsSuggested]) -> SampleResult:
    """The protocol's sampling (e.g. label quotas, or grade strata with rare cells first)."""
    return protocols.get(cmd.protocol).draw_sample(pool, cmd.plan)


def _failed(cmd: SamplingRequested, why: str) -> SamplingCompleted:
    return SamplingCompleted(study_id=cmd.run_id, correlation_id=cmd.correlation_id, run_id=cmd.run_id,
                             protocol=cmd.protocol, status="failed", error=f"sampling run {cmd.run_id}: {why}")


def _assigned(cmd: SamplingRequested, s: LabelsSuggested, sel: Any, readers: list[str]) -> ReviewAssigned:
    return ReviewAssigned(
        study_id=s.study_id, correlation_id=cmd.correlation_id, protocol=s.protocol, run_id=cmd.run_id,
        patient_id=s.patient_id, readers=readers, reason=sel.reason, difficulty=sel.difficulty.value,
        suggested=s.labels, unmapped_findings=s.unmapped_findings, taxonomy_version=s.taxonomy_version,
        extraction=s.extraction, mapping=s.mapping, objects_manifest=s.objects_manifest,
    )


async def on_vote_cast(conn: psycopg.AsyncConnection, vote: VoteCast, _: Any) -> list[ReviewReoffered]:
    """A vote ends its read's lease; a vote that beat a move undoes the move (announced)."""
    undone = await leases.on_vote(conn, vote)
    return [] if undone is None else [undone]


async def on_votes_cast(conn: psycopg.AsyncConnection, votes: list[VoteCast], _: list[Any]) -> list[ReviewReoffered]:
    """A batch of votes with the effects of `on_vote_cast` on each in order: their leases closed in
    one statement. A read's second vote in the batch finds its lease voted, as it would one by one.
    A vote that beat a move (rare: its lease had expired and moved) makes the batch go one by one
    (`OneByOne`), since undoing the move changes leases that later votes of the batch may close."""
    reads = list(dict.fromkeys((v.study_id, v.reader_id) for v in votes))
    closed = await repo.close_leases(conn, reads)
    if any(lease["status"] == "expired" and lease["replaced_by"] for lease in closed.values()):
        raise OneByOne
    return []


async def on_reassignment_requested(conn: psycopg.AsyncConnection, cmd: ReassignmentRequested, _: Any,
                                    lease_seconds: float = DEFAULT_LEASE_SECONDS) -> list[ReviewReoffered]:
    """A curator moves an open read; the rules of an expired lease apply (eligibility, capacity)."""
    why = f"reassigned by {cmd.requested_by}" + (f": {cmd.reason}" if cmd.reason else "")
    event = await leases.move_read(conn, cmd.study_id, cmd.from_reader, why, lease_seconds, cmd.to_reader)
    return [] if event is None else [event.model_copy(update={"correlation_id": cmd.correlation_id})]


def build_handlers(res: Resources[SamplerSettings]) -> dict[str, Handler]:
    lease = res.settings.lease_seconds

    def with_lease(fn: Any) -> Any:
        async def apply(conn: psycopg.AsyncConnection, event: Any, prepared: Any) -> Any:
            return await fn(conn, event, prepared, lease)
        return apply

    return {
        Topic.LABELS_SUGGESTED.value: Handler(apply=with_lease(on_labels_suggested),
                                              apply_many=on_labels_suggested_many),
        Topic.SAMPLING_REQUESTED.value: Handler(apply=with_lease(on_sampling_requested)),
        Topic.VOTE_CAST.value: Handler(apply=on_vote_cast, apply_many=on_votes_cast),
        Topic.REASSIGNMENT_REQUESTED.value: Handler(apply=with_lease(on_reassignment_requested)),
    }
