"""The gateway's read models: suggestions, assignments, decisions, releases and sampling runs, from events."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg

from services.common import protocols
from services.common.consumer import Handler, OneByOne
from services.common.contracts import (
    BenchmarkReleased,
    ConsensusReached,
    EvaluationCompleted,
    Event,
    LabelsSuggested,
    ReportReady,
    ReviewAssigned,
    ReviewReoffered,
    SamplingCompleted,
    StudyAdjudicated,
    Topic,
)
from services.common.runtime import Resources
from services.gateway import ladder
from services.gateway.derivatives import Derivatives, derivatives_for
from services.gateway.ladder import PolicySettings
from services.gateway.repo import assignments, decisions, evaluations, releases, reports, sampling_runs, studies

_ASSIGNMENT_NS = uuid.UUID("6f1c2a64-5d5e-4f55-9a53-0c1f3f7e2b10")


def assignment_id(study_id: str, reader_id: str) -> str:
    """Deterministic, so a replayed review-assigned event maps to the same assignment."""
    return str(uuid.uuid5(_ASSIGNMENT_NS, f"{study_id}\x1f{reader_id}"))


async def on_labels_suggested(conn: psycopg.AsyncConnection, e: LabelsSuggested, _: Any) -> None:
    """Keep the suggestion a reader will see."""
    await studies.save_suggestions(conn, [e])


async def on_labels_suggested_many(conn: psycopg.AsyncConnection, batch: list[LabelsSuggested],
                                   _: list[Any]) -> list[Event]:
    """A batch of suggestions in one statement; a study twice in it goes one by one (`OneByOne`),
    so the later suggestion wins as it always has."""
    if len({e.study_id for e in batch}) < len(batch):
        raise OneByOne
    await studies.save_suggestions(conn, batch)
    return []


async def on_review_assigned(conn: psycopg.AsyncConnection, e: ReviewAssigned, _: Any) -> None:
    """Put the study on each of its readers' worklists."""
    await assignments.add(conn, [(assignment_id(e.study_id, r), e.study_id, r, e.run_id, e.difficulty,
                                  studies.dump(e.suggested), studies.dump(e.unmapped_findings), e.reason, e.protocol)
                                 for r in e.readers])


async def prepare_open_reads(res: Resources) -> None:
    """At start: queue the derivatives of every study still open for a reader (the background
    queue does not survive a restart; objects already prepared are skipped)."""
    async with res.pool.connection() as conn:
        digests = await studies.open_read_digests(conn)
    derivatives_for(res).schedule(digests)


def prepare_images(derivatives: Derivatives):
    """review-assigned also starts the study's display derivatives (in the background, so the
    worklist does not wait): by the time a reader opens the study its images are ready."""
    async def apply(conn: psycopg.AsyncConnection, e: ReviewAssigned, prepared: Any) -> None:
        await on_review_assigned(conn, e, prepared)
        derivatives.schedule(await studies.object_digests(conn, e.study_id))
    return apply


async def on_review_reoffered(conn: psycopg.AsyncConnection, e: ReviewReoffered, _: Any) -> None:
    """Move a read to its new reader, unless the old reader's vote got in first (then the vote
    stands and the sampler, seeing that vote, undoes the move on its side)."""
    old = await assignments.expire_open(conn, e.study_id, e.from_reader, e.to_reader)
    if old is None:
        return
    await assignments.add_moved(conn, assignment_id(e.study_id, e.to_reader), e.study_id, e.to_reader, old,
                                f"{old['reason']} (re-offered: {e.reason})")


async def on_sampling_completed(conn: psycopg.AsyncConnection, e: SamplingCompleted, _: Any) -> None:
    """Keep the run's outcome for curators: counts, tiers, and the quotas the pool could not meet."""
    await sampling_runs.complete(conn, e)


async def on_consensus_reached(conn: psycopg.AsyncConnection, e: ConsensusReached, _: Any) -> None:
    await decisions.save(conn, e)


async def on_consensus_reached_many(conn: psycopg.AsyncConnection, batch: list[ConsensusReached],
                                    _: list[Any]) -> list[Event]:
    """A batch of decisions in one statement (a batch of votes decides many studies at once); a
    study twice in it goes one by one (`OneByOne`), so the first decision is kept as it always was."""
    if len({e.study_id for e in batch}) < len(batch):
        raise OneByOne
    await decisions.save_many(conn, batch)
    return []


def record_release(res: Resources):
    """benchmark-released: the release, the evaluation policy it comes out under (recorded once,
    so a later settings change does not alter a release's answers), and its holdout study ids
    from the public manifest, which end readers' access to those studies (issue 11 §12)."""
    async def read_manifest(e: BenchmarkReleased) -> list[str]:
        if not e.manifest_key:
            return []
        body = await res.store.aget_bytes(res.settings.public_bucket, e.manifest_key)
        return list(json.loads(body).get("holdout", {}).get("study_ids", []))

    async def apply(conn: psycopg.AsyncConnection, e: BenchmarkReleased, holdout: list[str] | None) -> None:
        try:
            higher_is_better = protocols.get(e.protocol).metric.higher_is_better
        except protocols.UnknownProtocol:
            higher_is_better = True
        policy = PolicySettings().policy(higher_is_better)
        await releases.record_released(conn, e, policy)
        await releases.hold_out(conn, e.release_id, holdout or [])
    return Handler(apply=apply, prepare=read_manifest)


def build_handlers(res: Resources) -> dict[str, Handler]:
    return {
        Topic.LABELS_SUGGESTED.value: Handler(apply=on_labels_suggested, apply_many=on_labels_suggested_many),
        Topic.REVIEW_ASSIGNED.value: Handler(apply=prepare_images(derivatives_for(res))),
        Topic.CONSENSUS_REACHED.value: Handler(apply=on_consensus_reached, apply_many=on_consensus_reached_many),
        Topic.BENCHMARK_RELEASED.value: record_release(res),
        Topic.STUDY_ADJUDICATED.value: Handler(apply=on_study_adjudicated),
        Topic.REPORT_READY.value: Handler(apply=on_report_ready),
        Topic.EVALUATION_COMPLETED.value: Handler(apply=on_evaluation_completed),
        Topic.REVIEW_REOFFERED.value: Handler(apply=on_review_reoffered),
        Topic.SAMPLING_COMPLETED.value: Handler(apply=on_sampling_completed),
    }


# --- curation read models (adjudications, reports, evaluations) -----------------------------


async def on_study_adjudicated(conn: psycopg.AsyncConnection, e: StudyAdjudicated, _: Any) -> None:
    """The decision read model follows the curator's ruling; consensus keeps the audit trail."""
    await decisions.apply_adjudication(conn, e)


async def on_report_ready(conn: psycopg.AsyncConnection, e: ReportReady, _: Any) -> None:
    await reports.mark_ready(conn, e.report_id, e.report)


async def on_evaluation_completed(conn: psycopg.AsyncConnection, e: EvaluationCompleted, _: Any) -> None:
    """Keep the full aggregate result (or the refusal) and what the release's policy lets the team
    see of it: the ladder value for an ordinary submission; the final one is shown whole."""
    row = await evaluations.lock_pending(conn, e.evaluation_id)
    if row is None or row["status"] != "pending":
        return  # unknown, or already completed (a redelivered event must not climb the ladder twice)
    published = None
    if e.status == "scored" and e.result is not None and not row["final"]:
        policy = row["evaluation_policy"] or PolicySettings().policy(True)
        # The team's earlier ladder values, under a lock so two results of one team climb in turn.
        await evaluations.lock_ladder(conn, row["team"], row["release_id"])
        best = ladder.best_published(await evaluations.published(conn, row["team"], row["release_id"]))
        published = json.dumps(ladder.publish(policy, e.result, best))
    await evaluations.complete(conn, e, published)
