"""review-assigned + vote-cast → consensus-reached; selection-requested → benchmark-released;
adjudication-requested → study-adjudicated; report-requested → report-ready;
evaluation-requested → evaluation-completed."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import psycopg

from services.common import manifests, metrics, protocols
from services.common.consumer import Handler, PermanentError
from services.common.contracts import (
    AdjudicationRequested,
    BenchmarkReleased,
    ConsensusReached,
    DicomObject,
    EvaluationCompleted,
    EvaluationRequested,
    ReportReady,
    ReportRequested,
    ReviewAssigned,
    ReviewReoffered,
    SelectionPlan,
    SelectionRequested,
    StudyAdjudicated,
    Topic,
    VoteCast,
)
from services.common.protocols import CurationProtocol
from services.common.protocols.kit.rule_config import RuleConfig, RuleConfigError, rule_for
from services.common.runtime import Resources
from services.consensus import repo
from services.consensus.evaluation import evaluate
from services.consensus.object_checks import PROFILE_VERSION
from services.consensus.publish import check_and_copy, publish_release
from services.consensus.release_ahead import ReleaseAhead

if TYPE_CHECKING:  # app.py imports this module
    from services.consensus.app import ConsensusSettings

ADJUDICATION_RULE, ADJUDICATION_RULE_VERSION = "curator-adjudication", "1"
log = logging.getLogger(__name__)


def build_handlers(res: Resources[ConsensusSettings]) -> dict[str, Handler]:
    rules_file = res.settings.rules_file
    n_bootstrap = res.settings.evaluation_bootstrap

    async def agreement_of(conn: psycopg.AsyncConnection, name: str) -> dict:
        """The agreement figures a release's card carries (`card_agreement`): what the release
        waits for after the last decision, so only they are read and computed there."""
        protocol = protocols.get(name)
        started = time.perf_counter()
        studies, votes = await repo.report_rows(conn, name, provenance=protocol.card_agreement_reads_provenance)
        read = time.perf_counter()
        agreement = await asyncio.to_thread(protocol.card_agreement, studies, votes)
        log.info("card agreement of %s: rows read in %.3fs, computed in %.3fs", name, read - started,
                  time.perf_counter() - read)
        return agreement

    # Checks and the agreement report prepared ahead of a release (release_ahead.py); the task that
    # runs them is started by app.py. Without a store (unit tests) only the report is cached.
    ahead = ReleaseAhead(res.store if getattr(res.settings, "check_ahead", True) else None,
                         getattr(res.settings, "objects_bucket", ""), agreement_of)
    if isinstance(getattr(res, "extra", None), dict):
        res.extra["release_ahead"] = ahead

    def protocol_and_rule(name: str) -> tuple[CurationProtocol, RuleConfig]:
        """The protocol's plug-in and its configured rule; either missing is a dead letter."""
        try:
            return protocols.get(name), rule_for(name, rules_file)
        except (protocols.UnknownProtocol, RuleConfigError) as exc:
            raise PermanentError(str(exc)) from None

    async def decide_if_complete(conn: psycopg.AsyncConnection, study_id: str) -> list[ConsensusReached]:
        return await decide(conn, study_id, *await repo.decision_inputs(conn, study_id))

    async def decide(conn: psycopg.AsyncConnection, study_id: str, assignment: dict | None, decided: bool,
                     counted: list[dict], pending: list[repo.DecisionRow] | None = None) -> list[ConsensusReached]:
        """Decide the study if all its current readers have voted (from `repo.decision_inputs`).
        With `pending`, the decision row is added to it for the caller to write with the others
        of its batch (`repo.save_decisions`, before anything reads decisions again) instead of
        being written now."""
        if assignment is None or decided:
            return []
        protocol, rule = protocol_and_rule(assignment["protocol"])
        # Only the current readers' votes: a vote recorded while its reader was moved away waits
        # until the move is undone (or never counts, if the move stood).
        votes = [v for v in counted if v["reader_id"] in assignment["readers"]]
        if len(votes) < len(assignment["readers"]):
            return []
        decision, cells = protocol.decide(study_id, votes, assignment, rule)
        vote_ids = [v["vote_id"] for v in votes]
        cell_rows = [c.model_dump(mode="json") for c in cells] if cells else None
        if pending is None:
            await repo.save_decision(conn, study_id, decision, vote_ids, cell_rows)
        else:
            pending.append((study_id, decision, vote_ids, cell_rows))
        ahead.note(study_id, assignment["protocol"], decision.accepted)
        if decision.needs_adjudication:
            await repo.flag(conn, study_id, f"adjudication: {decision.reason}")
        for reason in protocol.review_flags(decision.accepted, votes):
            await repo.flag(conn, study_id, reason)
        return [ConsensusReached(
            study_id=study_id, protocol=assignment["protocol"], accepted=decision.accepted, rule=decision.rule,
            rule_version=decision.rule_version, labels=list(decision.labels), vote_ids=vote_ids, cells=cells or [],
        )]

    async def protocol_agreement(conn: psycopg.AsyncConnection, protocol: CurationProtocol) -> dict:
        """The protocol's agreement report (e.g. Fleiss' kappa on verdicts, or QWK and point distance)."""
        studies, votes = await repo.report_rows(conn, protocol.name)
        return await asyncio.to_thread(protocol.agreement_report, studies, votes)

    async def fetch_objects(event: ReviewAssigned) -> list[DicomObject]:
        """Outside the transaction: the study's instance list, carried in the event when short, else
        fetched from its manifest and checked against the event's sha256 and count (a mismatch is a
        dead letter; the store being down, a pause)."""
        return await manifests.aget_objects(res.store, res.settings.objects_bucket, event.study_id,
                                            event.objects_manifest)

    async def on_review_assigned(conn: psycopg.AsyncConnection, event: ReviewAssigned,
                                 objects: list[DicomObject] | None) -> list[ConsensusReached]:
        """Remember who reads a study and what it holds; votes that raced ahead may now complete it."""
        await repo.save_assignment(conn, event, manifests.inline_objects(event.objects_manifest)
                                   if objects is None else objects)
        return await decide_if_complete(conn, event.study_id)

    async def on_reviews_assigned(conn: psycopg.AsyncConnection, events: list[ReviewAssigned],
                                  objects: list[list[DicomObject] | None]) -> list[ConsensusReached]:
        """A batch of assignments with the effects of `on_review_assigned` on each in order: their
        rows written (statements that read nothing, so they travel together), then one round trip
        reads every study they may complete (`repo.decision_inputs_many`) instead of one each. A
        study assigned twice in the batch is decided (if at all) at its first assignment, as one
        by one: the second finds it decided, or still incomplete."""
        for event, instances in zip(events, objects, strict=True):
            await repo.save_assignment(conn, event, manifests.inline_objects(event.objects_manifest)
                                       if instances is None else instances)
        studies = list(dict.fromkeys(e.study_id for e in events))
        inputs = await repo.decision_inputs_many(conn, studies)
        pending: list[repo.DecisionRow] = []
        reached = [r for study_id in studies for r in await decide(conn, study_id, *inputs[study_id], pending)]
        await repo.save_decisions(conn, pending)
        return reached

    async def on_review_reoffered(conn: psycopg.AsyncConnection, event: ReviewReoffered,
                                  _: Any) -> list[ConsensusReached]:
        """A reassignment changed the study's readers: the new reader's vote must count. When the
        sampler undoes a move (the old reader's vote beat it), that vote is already here and the
        study may now be complete."""
        if await repo.get_assignment(conn, event.study_id) is None:
            return []
        await repo.set_readers(conn, event.study_id, event.readers, event.from_reader)
        return await decide_if_complete(conn, event.study_id)

    async def recorded(conn: psycopg.AsyncConnection, vote: VoteCast, seen: dict) -> bool:
        """What a recorded vote (`seen`: what was known before it) leads to: True when it may
        complete its study; a vote by a non-reader is a dead letter, a late vote or re-vote a flag."""
        if seen["assigned"] and not (seen["reader"] or seen["former_reader"]):
            # not inserted: the statement records only a current or former reader's vote
            raise PermanentError(f"vote {vote.vote_id} by {vote.reader_id}, who is not a reader of this study")
        if seen["decided"] or seen["revote"]:  # recorded, not counted
            await repo.flag(conn, vote.study_id,
                            "vote after decision" if seen["decided"] else f"re-vote by {vote.reader_id}")
            return False
        # Not assigned yet: review-assigned decides when it comes. Fewer counted votes than readers
        # even with this one: nothing to decide. (An upper bound, as the insert may have met an
        # existing vote_id; `decide` counts exactly.)
        return bool(seen["assigned"]) and seen["counted_by_readers"] + seen["reader"] >= seen["n_readers"]

    async def on_vote_cast(conn: psycopg.AsyncConnection, vote: VoteCast, _: Any) -> list[ConsensusReached]:
        """Record a vote; decide the study once all its readers have voted.

        One statement records the vote and says what was known before it (`repo.record_vote`);
        only a vote that can complete its study reads the study's votes."""
        if not await recorded(conn, vote, await repo.record_vote(conn, vote)):
            return []
        return await decide_if_complete(conn, vote.study_id)

    async def on_votes_cast(conn: psycopg.AsyncConnection, votes: list[VoteCast],
                            _: list[Any]) -> list[ConsensusReached]:
        """A batch of votes with the effects of `on_vote_cast` on each in order, in a few round
        trips instead of one or two per vote: the batch goes in rounds, each holding at most one
        vote per study (a study's votes keep their order across rounds). A study's state depends
        only on its own votes, so the votes of one round are independent: one statement records
        them all (`repo.record_votes`), one round trip reads every study they may complete
        (`repo.decision_inputs_many`) and one statement writes the round's decisions
        (`repo.save_decisions`), before the next round reads."""
        rounds: list[list[int]] = []
        depth: dict[str, int] = {}
        for i, vote in enumerate(votes):
            n = depth[vote.study_id] = depth.get(vote.study_id, -1) + 1
            if n == len(rounds):
                rounds.append([])
            rounds[n].append(i)
        emitted: list[list[ConsensusReached]] = [[] for _ in votes]
        for members in rounds:
            batch = [votes[i] for i in members]
            complete = [i for i, seen in zip(members, await repo.record_votes(conn, batch), strict=True)
                        if await recorded(conn, votes[i], seen)]
            if complete:
                inputs = await repo.decision_inputs_many(conn, [votes[i].study_id for i in complete])
                pending: list[repo.DecisionRow] = []
                for i in complete:
                    emitted[i] = await decide(conn, votes[i].study_id, *inputs[votes[i].study_id], pending)
                await repo.save_decisions(conn, pending)  # one statement, before the next round reads
        return [e for per_vote in emitted for e in per_vote]

    async def on_adjudication_requested(conn: psycopg.AsyncConnection, cmd: AdjudicationRequested,
                                        _: Any) -> list[StudyAdjudicated]:
        """Record a curator's ruling next to the rule's decision (an audit trail, never an overwrite)."""
        current = await repo.effective_decision(conn, cmd.study_id)
        if current is None:
            raise PermanentError(f"adjudication {cmd.adjudication_id}: study {cmd.study_id} has no decision yet")
        assignment = await repo.get_assignment(conn, cmd.study_id)
        protocol = protocol_and_rule(assignment["protocol"])[0]
        instances = {(o["series_instance_uid"], o["instance_number"]) for o in assignment["objects"] or []}
        try:  # the gateway checked the same; a command that bypassed it is a dead letter, not a ruling
            ruling = [c.model_dump(mode="json") for c in cmd.cells]
            labels, cells = protocol.adjudicate(cmd.accepted, cmd.labels, ruling, current["cells"], instances)
        except protocols.JudgementRejected as exc:
            raise PermanentError(f"adjudication {cmd.adjudication_id}: {exc.detail}") from None
        if not await repo.save_adjudication(conn, cmd, labels, current, cells):
            return []
        await repo.resolve_flags(conn, cmd.study_id, cmd.curator_id)
        ahead.note(cmd.study_id, assignment["protocol"], cmd.accepted)
        return [StudyAdjudicated(
            study_id=cmd.study_id, correlation_id=cmd.correlation_id, protocol=assignment["protocol"],
            adjudication_id=cmd.adjudication_id, curator_id=cmd.curator_id, accepted=cmd.accepted, labels=labels,
            previous_accepted=current["accepted"], rule=ADJUDICATION_RULE, rule_version=ADJUDICATION_RULE_VERSION,
            cells=cells or [],
        )]

    async def on_report_requested(conn: psycopg.AsyncConnection, cmd: ReportRequested, _: Any) -> list[ReportReady]:
        """Compute the agreement / AI-vs-expert report, or a release preview, from this service's own tables."""
        protocol, rule = protocol_and_rule(cmd.protocol)
        if cmd.kind == "release-preview":
            report = await release_preview(conn, cmd, protocol, rule)
        else:
            report = await protocol_agreement(conn, protocol)
            report["open_flags"] = await repo.open_flags(conn)
            report["rule"] = rule.describe()
        return [ReportReady(study_id=cmd.report_id, correlation_id=cmd.correlation_id, report_id=cmd.report_id,
                            protocol=cmd.protocol, kind=cmd.kind, report=report)]

    async def release_preview(conn: psycopg.AsyncConnection, cmd: ReportRequested, protocol: CurationProtocol,
                              rule: RuleConfig) -> dict:
        """The dataset card a release with `cmd.plan` would carry if requested now: the same
        selection and split as a release (same code, same seed), nothing written. Counts and
        per-split prevalence only, as in the published card; never which study is where."""
        rows = (await ahead.accepted(conn, cmd.protocol))[0]
        if len(rows) < 2:
            return {"error": f"{len(rows)} accepted studies, need at least 2 to release"}
        agreement = (await ahead.agreement(conn, protocol.name))[0]
        funnel = await repo.funnel_counts(conn, cmd.protocol)
        try:
            composed = await asyncio.to_thread(protocol.compose_release, cmd.report_id, rows,
                                               cmd.plan or SelectionPlan(), funnel, rule, agreement)
        except ValueError as exc:  # a plan the accepted studies cannot satisfy: the curator reads why
            return {"error": str(exc)}
        card = next(json.loads(body) for (kind, key), body in composed.files.files.items()
                    if kind == "public" and key.endswith("/dataset_card.json"))
        return {"card": {k: v for k, v in card.items() if k != "release_id"}}

    async def fetch_submission(cmd: EvaluationRequested) -> str | None:
        """The submitted file from the object store, read before the transaction opens."""
        if not cmd.submission_key:
            return None  # an older request that carried the file inline
        data = await res.store.aget_bytes(res.settings.objects_bucket, cmd.submission_key)
        return data.decode("utf-8", errors="replace")

    async def on_evaluation_requested(conn: psycopg.AsyncConnection, cmd: EvaluationRequested,
                                      submission: str | None) -> list[EvaluationCompleted]:
        """Score a submission against the holdout; only aggregates (or a truth-free error) go back."""
        if submission is not None:
            cmd = cmd.model_copy(update={"predictions_csv": submission})
        release = await repo.get_release(conn, cmd.release_id)
        truth = await repo.holdout_truth(conn, cmd.release_id) if release else {}
        if release:  # the holdout bootstrap resamples patients, not studies
            release = {**release, "holdout_patients": await repo.holdout_patients(conn, cmd.release_id)}
        outcome = await asyncio.to_thread(evaluate, cmd, release, truth, n_bootstrap)
        row = {"evaluation_id": cmd.evaluation_id, "evaluator_id": cmd.evaluator_id, "release_id": cmd.release_id,
               "submission_sha256": cmd.submission_sha256, "status": outcome.status, "receipt": outcome.receipt,
               "metric_version": outcome.metric_version, "result": outcome.result, "error": outcome.error}
        await repo.save_evaluation(conn, row)
        return [EvaluationCompleted(study_id=cmd.evaluation_id, correlation_id=cmd.correlation_id,
                                    **{k: v for k, v in row.items() if k != "submission_sha256"})]

    async def choose_release(conn: psycopg.AsyncConnection,
                             cmd: SelectionRequested) -> tuple[Any, dict, float, frozenset, dict] | None:
        """Choose the benchmark from accepted studies and split it; None if it is released already.
        The chosen DICOM objects are checked against the de-identification profile and then copied
        while the agreement report is computed: the report only fills the dataset card and decides
        nothing about which studies go where. The manifest is still written last (publish_release).
        Checks made when the studies were decided are reused where the stored bytes are still the
        checked ones, and the report computed when the last study was decided while its inputs are
        unchanged, and likewise the accepted studies read then (release_ahead.py). Raises
        NotDeidentified, having copied nothing."""
        if await repo.release_exists(conn, cmd.release_id):
            return None
        started = time.perf_counter()
        rows, rows_ahead = await ahead.accepted(conn, cmd.protocol)
        if len(rows) < 2:
            raise PermanentError(f"release {cmd.release_id}: {len(rows)} accepted studies, need at least 2")
        protocol, rule = protocol_and_rule(cmd.protocol)
        sha256 = {o["object_key"]: o["sha256"] for r in rows for o in r["objects"] or []}
        known = await repo.passed_checks(conn, sorted(sha256.items()), PROFILE_VERSION)
        read = time.perf_counter()
        try:
            copies = protocol.release_copies(cmd.release_id, rows, cmd.plan)
        except ValueError:  # a plan the studies cannot satisfy: compose_release below says so, as before
            copies = None
        copying = asyncio.create_task(asyncio.to_thread(check_and_copy, res.store, res.settings, copies, known)) \
            if copies else None
        try:
            agreement, reused = await ahead.agreement(conn, protocol.name)
            agreed = time.perf_counter()
            funnel = {**cmd.funnel, **await repo.funnel_counts(conn, cmd.protocol)}
            composed = protocol.compose_release(cmd.release_id, rows, cmd.plan, funnel, rule, agreement)
            composed_at = time.perf_counter()
        finally:
            if copying is not None:  # the copies never run on behind a failure, whose error is the one raised
                await asyncio.wait([copying])
                refused = copying.exception()
        if copying is not None and refused is not None:
            raise refused
        phases = copying.result() if copying is not None else {}
        log.info("release %s: %d accepted studies read in %.3fs (%s); agreement report %.3fs (%s); composed %.3fs;"
                 " %s objects (%d checked ahead) checked and copied beside them, done %.3fs after (%s)",
                 cmd.release_id, len(rows), read - started, "ahead" if rows_ahead else "now", agreed - read,
                 "cached" if reused else "computed",
                 composed_at - agreed, len(copies) if copies else "no", len(known),
                 time.perf_counter() - composed_at, ", ".join(f"{k} {v:.3f}s" for k, v in phases.items()))
        truth = composed.truth  # what evaluation scores against; it never leaves this service
        return composed, truth, started, frozenset(copies or ()), known

    async def publish_selection(cmd: SelectionRequested) -> tuple[Any, dict, float] | None:
        """Choose the release and write its files before the transaction opens: the object store
        is never written while a database transaction is held. A redelivery after a crash
        between this and the commit rewrites a complete release (the manifest goes last)."""
        started = time.perf_counter()
        async with res.pool.connection() as conn:
            chosen = await choose_release(conn, cmd)
        if chosen is None:
            return None
        composed, truth, run_started, done, known = chosen
        chosen_s = time.perf_counter() - started
        phases = await asyncio.to_thread(publish_release, res.store, res.settings, composed.files, done, known)
        log.info("release %s chosen in %.3fs, then %s", cmd.release_id, chosen_s,
                 ", ".join(f"{k} {v:.3f}s" for k, v in phases.items()))
        return composed, truth, run_started

    async def on_selection_requested(conn: psycopg.AsyncConnection, cmd: SelectionRequested,
                                     chosen: tuple[Any, dict, float] | None) -> list[BenchmarkReleased]:
        """Record the release `publish_selection` wrote, and announce it."""
        if chosen is None or await repo.release_exists(conn, cmd.release_id):
            return []
        composed, truth, started = chosen
        files = composed.files
        await repo.save_release(conn, cmd.release_id, cmd.protocol, cmd.plan.model_dump_json(),
                                [s.study_id for s in composed.released], truth,
                                files.manifest_key, files.manifest_sha256)
        metrics.SELECTION_RUN.observe(time.perf_counter() - started)
        return [BenchmarkReleased(
            study_id=cmd.release_id, correlation_id=cmd.correlation_id, release_id=cmd.release_id,
            protocol=cmd.protocol, released_count=len(composed.released), holdout_count=len(composed.holdout),
            manifest_key=files.manifest_key, manifest_sha256=files.manifest_sha256,
        )]

    return {
        Topic.REVIEW_ASSIGNED.value: Handler(apply=on_review_assigned, prepare=fetch_objects,
                                               apply_many=on_reviews_assigned),
        Topic.REVIEW_REOFFERED.value: Handler(apply=on_review_reoffered),
        Topic.VOTE_CAST.value: Handler(apply=on_vote_cast, apply_many=on_votes_cast),
        Topic.SELECTION_REQUESTED.value: Handler(apply=on_selection_requested, prepare=publish_selection),
        Topic.ADJUDICATION_REQUESTED.value: Handler(apply=on_adjudication_requested),
        Topic.REPORT_REQUESTED.value: Handler(apply=on_report_requested),
        Topic.EVALUATION_REQUESTED.value: Handler(apply=on_evaluation_requested, prepare=fetch_submission),
    }

