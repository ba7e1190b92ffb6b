"""The gateway's read models: suggestions, assignments, decisions, releases and sampling runs, from events."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg

from services.common import protocols
from services.common.consumer import Handler
from services.common.contracts import (
    BenchmarkReleased,
    ConsensusReached,
    EvaluationCompleted,
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

_ASSIGNMENT_NS = uuid.UUID("6f1c2a64-5d5e-4f55-9a53-0c1f3f7e2b10")


def assignment_id(study_id: str, reader_id: str) -> str:
    """Deterministic, so a replayed review-assigned event maps to the same assignment."""
    return str(uuid.uuid5(_ASSIGNMENT_NS, f"{study_id}\x1f{reader_id}"))


def _dump(items: list) -> str:
    return json.dumps([i.model_dump(mode="json") for i in items])


async def on_labels_suggested(conn: psycopg.AsyncConnection, e: LabelsSuggested, _: Any) -> None:
    """Keep the suggestion a reader will see."""
    await conn.execute(
        "INSERT INTO suggestions (study_id, taxonomy_version, labels, unmapped, extraction, mapping)"
        " VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (study_id) DO UPDATE SET labels = EXCLUDED.labels,"
        " unmapped = EXCLUDED.unmapped, taxonomy_version = EXCLUDED.taxonomy_version",
        (e.study_id, e.taxonomy_version, _dump(e.labels), _dump(e.unmapped_findings),
         e.extraction.model_dump_json(), e.mapping.model_dump_json()))


async def on_review_assigned(conn: psycopg.AsyncConnection, e: ReviewAssigned, _: Any) -> None:
    """Put the study on each of its readers' worklists."""
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO assignments (assignment_id, study_id, reader_id, run_id, difficulty, suggested, unmapped,"
            " reason, protocol) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
            [(assignment_id(e.study_id, r), e.study_id, r, e.run_id, e.difficulty, _dump(e.suggested),
              _dump(e.unmapped_findings), e.reason, e.protocol) for r in e.readers])


async def prepare_open_reads(res: Resources) -> None:
    """At start: queue the derivatives of every study still open for a reader (the background
    queue does not survive a restart; objects already prepared are skipped)."""
    async with res.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT o.sha256, min(o.object_key) AS object_key FROM study_objects o WHERE o.study_id IN"
            " (SELECT study_id FROM assignments WHERE status = 'open') GROUP BY o.sha256")
        rows = await cur.fetchall()
    derivatives_for(res).schedule([(r["sha256"], r["object_key"]) for r in rows])


def prepare_images(derivatives: Derivatives):
    """review-assigned also starts the study's display derivatives (in the background, so the
    worklist does not wait): by the time a reader opens the study its images are ready."""
    async def apply(conn: psycopg.AsyncConnection, e: ReviewAssigned, prepared: Any) -> None:
        await on_review_assigned(conn, e, prepared)
        cur = await conn.execute("SELECT sha256, object_key FROM study_objects WHERE study_id = %s"
                                 " ORDER BY series_instance_uid, instance_number", (e.study_id,))
        derivatives.schedule([(r["sha256"], r["object_key"]) for r in await cur.fetchall()])
    return apply


async def on_review_reoffered(conn: psycopg.AsyncConnection, e: ReviewReoffered, _: Any) -> None:
    """Move a read to its new reader, unless the old reader's vote got in first (then the vote
    stands and the sampler, seeing that vote, undoes the move on its side)."""
    cur = await conn.execute(
        "UPDATE assignments SET status = 'expired', expired_at = now(), replaced_by = %s"
        " WHERE study_id = %s AND reader_id = %s AND status = 'open'"
        " RETURNING run_id, difficulty, suggested, unmapped, reason, protocol", (e.to_reader, e.study_id, e.from_reader))
    old = await cur.fetchone()
    if old is None:
        return
    await conn.execute(
        "INSERT INTO assignments (assignment_id, study_id, reader_id, run_id, difficulty, suggested, unmapped, reason,"
        " protocol) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
        (assignment_id(e.study_id, e.to_reader), e.study_id, e.to_reader, old["run_id"], old["difficulty"],
         json.dumps(old["suggested"]), json.dumps(old["unmapped"]), f"{old['reason']} (re-offered: {e.reason})",
         old["protocol"]))


async def on_sampling_completed(conn: psycopg.AsyncConnection, e: SamplingCompleted, _: Any) -> None:
    """Keep the run's outcome for curators: counts, tiers, and the quotas the pool could not meet."""
    await conn.execute(
        "UPDATE sampling_runs SET status = %s, pool_size = %s, n_selected = %s, unmet_quotas = %s, tiers = %s,"
        " label_counts = %s, seconds = %s, error = %s, completed_at = %s WHERE run_id = %s",
        (e.status, e.pool_size, e.n_selected, json.dumps(e.unmet_quotas), json.dumps(e.tiers),
         json.dumps(e.label_counts), e.seconds, e.error, e.occurred_at, e.run_id))


async def on_consensus_reached(conn: psycopg.AsyncConnection, e: ConsensusReached, _: Any) -> None:
    await conn.execute(
        "INSERT INTO decisions (study_id, accepted, labels, rule, vote_ids) VALUES (%s,%s,%s,%s,%s)"
        " ON CONFLICT (study_id) DO NOTHING",
        (e.study_id, e.accepted, json.dumps(e.labels), e.rule, json.dumps(e.vote_ids)))


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
        await conn.execute(
            "INSERT INTO releases (release_id, protocol, status, released_count, holdout_count, manifest_key,"
            " manifest_sha256, evaluation_policy) VALUES (%s,%s,'released',%s,%s,%s,%s,%s) ON CONFLICT (release_id)"
            " DO UPDATE SET status = 'released', released_count = EXCLUDED.released_count,"
            " holdout_count = EXCLUDED.holdout_count, manifest_key = EXCLUDED.manifest_key,"
            " manifest_sha256 = EXCLUDED.manifest_sha256,"
            " evaluation_policy = COALESCE(releases.evaluation_policy, EXCLUDED.evaluation_policy)",
            (e.release_id, e.protocol, e.released_count, e.holdout_count, e.manifest_key, e.manifest_sha256,
             json.dumps(policy)))
        async with conn.cursor() as cur:
            await cur.executemany("INSERT INTO holdout_studies (study_id, release_id) VALUES (%s,%s)"
                                  " ON CONFLICT DO NOTHING", [(s, e.release_id) for s in holdout or []])
    return Handler(apply=apply, prepare=read_manifest)


def build_handlers(res: Resources) -> dict[str, Handler]:
    return {
        Topic.LABELS_SUGGESTED.value: Handler(apply=on_labels_suggested),
        Topic.REVIEW_ASSIGNED.value: Handler(apply=prepare_images(derivatives_for(res))),
        Topic.CONSENSUS_REACHED.value: Handler(apply=on_consensus_reached),
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
    await conn.execute("UPDATE decisions SET accepted = %s, labels = %s, rule = %s WHERE study_id = %s",
                       (e.accepted, json.dumps(e.labels), e.rule, e.study_id))
    await conn.execute("UPDATE adjudications SET applied_at = now() WHERE adjudication_id = %s", (e.adjudication_id,))


async def on_report_ready(conn: psycopg.AsyncConnection, e: ReportReady, _: Any) -> None:
    await conn.execute("UPDATE reports SET status = 'ready', body = %s, ready_at = now() WHERE report_id = %s",
                       (json.dumps(e.report), e.report_id))


async def on_evaluation_completed(conn: psycopg.AsyncConnection, e: EvaluationCompleted, _: Any) -> None:
    """Keep the full aggregate result (or the refusal) and what the release's policy lets the team
    see of it: the ladder value for an ordinary submission; the final one is shown whole."""
    cur = await conn.execute(
        "SELECT v.team, v.release_id, v.final, v.status, r.evaluation_policy, r.protocol FROM evaluations v"
        " LEFT JOIN releases r USING (release_id) WHERE v.evaluation_id = %s FOR UPDATE OF v", (e.evaluation_id,))
    row = await cur.fetchone()
    if row is None or row["status"] != "pending":
        return  # unknown, or already completed (a redelivered event must not climb the ladder twice)
    published = None
    if e.status == "scored" and e.result is not None and not row["final"]:
        policy = row["evaluation_policy"] or PolicySettings().policy(True)
        # The team's earlier ladder values, under a lock so two results of one team climb in turn.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ladder:{row['team']}:{row['release_id']}",))
        cur = await conn.execute(
            "SELECT published FROM evaluations WHERE team = %s AND release_id = %s AND published IS NOT NULL"
            " ORDER BY completed_at, evaluation_id", (row["team"], row["release_id"]))
        best = ladder.best_published([r["published"] for r in await cur.fetchall()])
        published = json.dumps(ladder.publish(policy, e.result, best))
    await conn.execute(
        "UPDATE evaluations SET status = %s, result = %s, published = %s, error = %s, receipt = %s,"
        " metric_version = %s, completed_at = now() WHERE evaluation_id = %s",
        (e.status, json.dumps(e.result) if e.result is not None else None, published, e.error, e.receipt,
         e.metric_version, e.evaluation_id))
