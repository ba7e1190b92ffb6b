"""review-assigned + vote-cast → consensus-reached; selection-requested → benchmark-released."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg

from services.common import metrics
from services.common.consumer import Handler, PermanentError
from services.common.contracts import (
    BenchmarkReleased,
    ConsensusReached,
    Protocol,
    ReviewAssigned,
    SelectionRequested,
    Topic,
    VoteCast,
)
from services.common.runtime import Resources
from services.common.taxonomy import load_taxonomy
from services.consensus import repo
from services.consensus.publish import publish_release
from services.consensus.release import ReleaseStudy, build_release, prevalence
from services.consensus.rules import decide_cxr
from services.consensus.selection import AcceptedStudy, select_and_split


def build_handlers(res: Resources) -> dict[str, Handler]:
    min_agree_all = getattr(res.settings, "min_agree_all", 2)

    async def decide_if_complete(conn: psycopg.AsyncConnection, study_id: str) -> list[ConsensusReached]:
        assignment = await repo.get_assignment(conn, study_id)
        if assignment is None or await repo.is_decided(conn, study_id):
            return []
        votes = await repo.counted_votes(conn, study_id)
        readers = assignment["readers"]
        if len(votes) < len(readers):
            return []
        decision = decide_cxr([v for _, v in votes], assignment["suggested"],
                              min_agree_all=min_agree_all, readers_per_study=len(readers))
        vote_ids = [vid for vid, _ in votes]
        await repo.save_decision(conn, study_id, decision, vote_ids)
        if decision.needs_adjudication:
            await repo.flag(conn, study_id, f"adjudication: {decision.reason}")
        return [ConsensusReached(
            study_id=study_id, protocol=assignment["protocol"], accepted=decision.accepted, rule=decision.rule,
            rule_version=decision.rule_version, labels=list(decision.labels), vote_ids=vote_ids,
        )]

    async def on_review_assigned(conn: psycopg.AsyncConnection, event: ReviewAssigned, _: Any) -> list[ConsensusReached]:
        """Remember who reads a study; votes that raced ahead of this event may now complete it."""
        await repo.save_assignment(conn, event)
        return await decide_if_complete(conn, event.study_id)

    async def on_vote_cast(conn: psycopg.AsyncConnection, vote: VoteCast, _: Any) -> list[ConsensusReached]:
        """Record a vote; decide the study once all its readers have voted."""
        assignment = await repo.get_assignment(conn, vote.study_id)
        late = await repo.is_decided(conn, vote.study_id)
        revote = await repo.reader_has_counted_vote(conn, vote.study_id, vote.reader_id)
        if assignment is not None and vote.reader_id not in assignment["readers"]:
            raise PermanentError(f"vote {vote.vote_id} by {vote.reader_id}, who is not a reader of this study")
        await repo.save_vote(conn, vote, counted=not (late or revote))
        if late or revote:
            await repo.flag(conn, vote.study_id, "vote after decision" if late else f"re-vote by {vote.reader_id}")
            return []
        return await decide_if_complete(conn, vote.study_id)

    async def on_selection_requested(conn: psycopg.AsyncConnection, cmd: SelectionRequested, _: Any) -> list[BenchmarkReleased]:
        """Choose the benchmark from accepted studies, split it, and write the release."""
        if await repo.release_exists(conn, cmd.release_id):
            return []
        started = time.perf_counter()
        taxonomy = load_taxonomy("cxr")
        rows = await repo.accepted_studies(conn, cmd.protocol)
        if len(rows) < 2:
            raise PermanentError(f"release {cmd.release_id}: {len(rows)} accepted studies, need at least 2")
        studies = {r["study_id"]: ReleaseStudy(r["study_id"], r["patient_id"], frozenset(r["labels"]), tuple(r["objects"]))
                   for r in rows}
        split = select_and_split([AcceptedStudy(s.study_id, s.patient_id, s.labels) for s in studies.values()],
                                 cmd.plan, taxonomy.label_ids)
        released = [studies[sid] for sid in split.released]
        holdout = [studies[sid] for sid in split.holdout]
        funnel = {**cmd.funnel, **await repo.funnel_counts(conn, cmd.protocol),
                  "selected": len(released) + len(holdout), "released": len(released), "holdout": len(holdout)}
        card = {
            "release_id": cmd.release_id, "protocol": cmd.protocol, "taxonomy_version": taxonomy.version,
            "rule": "cxr-agree-all-majority", "plan": cmd.plan.model_dump(mode="json"), "funnel": funnel,
            "prevalence": {"released": prevalence(released, taxonomy.label_ids),
                           "holdout": prevalence(holdout, taxonomy.label_ids)},
            "unmet_quotas": list(split.unmet),
        }
        files = build_release(cmd.release_id, protocol=cmd.protocol, released=released, holdout=holdout,
                              label_ids=taxonomy.label_ids, card=card)
        await asyncio.to_thread(publish_release, res.store, res.settings, files)
        await repo.save_release(conn, cmd.release_id, cmd.protocol, cmd.plan.model_dump_json(), split.released,
                                {s.study_id: sorted(s.labels) for s in holdout}, files.manifest_key, files.manifest_sha256)
        metrics.SELECTION_RUN.observe(time.perf_counter() - started)
        return [BenchmarkReleased(
            study_id=cmd.release_id, correlation_id=cmd.correlation_id, release_id=cmd.release_id,
            protocol=cmd.protocol, released_count=len(released), holdout_count=len(holdout),
            manifest_key=files.manifest_key, manifest_sha256=files.manifest_sha256,
        )]

    return {
        Topic.REVIEW_ASSIGNED.value: Handler(apply=on_review_assigned),
        Topic.VOTE_CAST.value: Handler(apply=on_vote_cast),
        Topic.SELECTION_REQUESTED.value: Handler(apply=on_selection_requested),
    }


__all__ = ["build_handlers", "Protocol"]
