"""labels-suggested → the pool; sampling-requested → review-assigned (one per sampled study)."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg

from services.common import metrics
from services.common.consumer import Handler, PermanentError
from services.common.contracts import LabelsSuggested, ReviewAssigned, SamplingRequested, Topic
from services.common.runtime import Resources
from services.common.taxonomy import load_taxonomy
from services.sampler import repo
from services.sampler.assignment import assign_readers
from services.sampler.sampling import Candidate, draw_sample


def candidate_from(s: LabelsSuggested) -> Candidate:
    """What the sampler knows about a study's difficulty, from its suggestion."""
    confidences = [label.confidence for label in s.labels]
    return Candidate(
        study_id=s.study_id,
        patient_id=s.patient_id,
        labels=frozenset(label.label_id for label in s.labels),
        uncertain=frozenset(label.label_id for label in s.labels if label.uncertain),
        confidence=min(confidences) if confidences else None,
        n_unmapped=len(s.unmapped_findings),
    )


async def on_labels_suggested(conn: psycopg.AsyncConnection, event: LabelsSuggested, _: Any) -> list[ReviewAssigned]:
    """Add a study to the candidate pool; run parked sampling requests the pool now satisfies."""
    await repo.add_candidate(conn, event)
    emitted: list[ReviewAssigned] = []
    for cmd in await repo.pending_runs(conn):
        if await repo.pool_size(conn, cmd.protocol) >= cmd.min_pool_size:
            await repo.unpark_run(conn, cmd.run_id)
            emitted += await run_sampling(conn, cmd)
    return emitted


async def on_sampling_requested(conn: psycopg.AsyncConnection, cmd: SamplingRequested, _: Any) -> list[ReviewAssigned]:
    """Draw the sample now, or park the request until the pool is as large as it asks."""
    if await repo.run_exists(conn, cmd.run_id):
        return []
    if await repo.pool_size(conn, cmd.protocol) < cmd.min_pool_size:
        await repo.park_run(conn, cmd)
        return []
    return await run_sampling(conn, cmd)


async def run_sampling(conn: psycopg.AsyncConnection, cmd: SamplingRequested) -> list[ReviewAssigned]:
    """Draw the sample, assign K readers per study, and announce each assignment."""
    started = time.perf_counter()
    suggestions = {s.study_id: s for s in await repo.unsampled_pool(conn, cmd.protocol)}
    label_ids = load_taxonomy("cxr").label_ids
    result = draw_sample([candidate_from(s) for s in suggestions.values()], cmd.plan, label_ids)
    if not result.selected:
        raise PermanentError(f"sampling run {cmd.run_id}: the pool has no unsampled studies")
    try:
        readers = assign_readers(
            [sel.study_id for sel in result.selected], cmd.panel, cmd.plan.readers_per_study,
            seed=cmd.plan.seed, existing_load=await repo.reader_load(conn),
        )
    except ValueError as exc:
        raise PermanentError(f"sampling run {cmd.run_id}: {exc}") from exc
    seconds = time.perf_counter() - started
    tiers = {str(k): v for k, v in getattr(result, "tier_counts", {}).items()}
    await repo.save_run(conn, cmd, len(suggestions), len(result.selected), result.unmet_quotas, tiers, seconds)
    rows = [(sel.study_id, sel.stratum, sel.quota, sel.difficulty.value, sel.reason, json.dumps(readers[sel.study_id]))
            for sel in result.selected]
    await repo.save_sampled(conn, cmd.run_id, rows)
    metrics.SAMPLING_RUN.observe(seconds)
    return [_assigned(cmd, suggestions[sel.study_id], sel, readers[sel.study_id]) for sel in result.selected]


def _assigned(cmd: SamplingRequested, s: LabelsSuggested, sel: Any, readers: list[str]) -> ReviewAssigned:
    return ReviewAssigned(
        study_id=s.study_id, correlation_id=cmd.correlation_id, protocol=s.protocol, run_id=cmd.run_id,
        patient_id=s.patient_id, readers=readers, reason=sel.reason, difficulty=sel.difficulty.value,
        suggested=s.labels, unmapped_findings=s.unmapped_findings, taxonomy_version=s.taxonomy_version,
        extraction=s.extraction, mapping=s.mapping, objects=s.objects,
    )


def build_handlers(res: Resources) -> dict[str, Handler]:
    return {
        Topic.LABELS_SUGGESTED.value: Handler(apply=on_labels_suggested),
        Topic.SAMPLING_REQUESTED.value: Handler(apply=on_sampling_requested),
    }
