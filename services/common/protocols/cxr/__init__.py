"""The CXR label-verification protocol (REVEAL-CXR): LLM-suggested labels from a fixed taxonomy,
verified by readers who answer *Agree all* / *Agree mostly* / *Disagree* and may correct them;
accepted when enough readers agree with every label; released as a label CSV; scored per label.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from services.common.contracts import (
    CellConsensus,
    Finding,
    LabelsSuggested,
    ModelProvenance,
    SamplingPlan,
    SelectionPlan,
    Verdict,
)
from services.common.protocols import (
    ComposedRelease,
    CurationProtocol,
    Extractor,
    JudgementRejected,
    Mapper,
    MappingResult,
    NeedsConfirmation,
    ReviewContext,
    SubmissionRejected,
    register,
)
from services.common.protocols.cxr import scoring
from services.common.protocols.cxr.benchmark import compose_release, release_copies
from services.common.protocols.cxr.extract import extract_findings
from services.common.protocols.cxr.judgement import NAME, LabelVerdict
from services.common.protocols.cxr.lexicon import map_findings
from services.common.protocols.cxr.omissions import CONFIRMATION_TYPE, describe, omissions
from services.common.protocols.cxr.reporting import (
    agreement_report,
    card_agreement,
    kappa_per_label,
    reader_label_sets,
)
from services.common.protocols.cxr.verdicts import VerdictRules, check_verdict
from services.common.protocols.kit.decision import CXR_RULE, Decision, VoteView
from services.common.protocols.kit.rule_config import RuleConfig, decide
from services.common.protocols.kit.sampling import Candidate, SampleResult, draw_sample
from services.common.protocols.kit.submission import Metric, SubmissionFormat
from services.common.taxonomy import Taxonomy, load_taxonomy

RULES_PROVENANCE = ModelProvenance(backend="rules", model="negex-rules", prompt_version="cxr-rules-v1")
LEXICON_PROVENANCE = ModelProvenance(backend="lexicon", model="taxonomy-lexicon", prompt_version="cxr-lexicon-v1")


class RulesExtractor(Extractor):
    """The offline rule-based extractor behind the same interface as the LLM one."""

    provenance = RULES_PROVENANCE

    def __init__(self, taxonomy: Taxonomy) -> None:
        self._taxonomy = taxonomy

    async def extract(self, report: str) -> list[Finding]:
        return extract_findings(report, self._taxonomy)


class LexiconMapper(Mapper):
    """The offline lexicon mapper behind the same interface as the LLM one."""

    provenance = LEXICON_PROVENANCE

    def __init__(self, taxonomy: Taxonomy) -> None:
        self._taxonomy = taxonomy

    async def map(self, findings: list[Finding]) -> MappingResult:
        labels, unmapped = map_findings(findings, self._taxonomy)
        return MappingResult(labels, unmapped)


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


class CxrLabelVerification(CurationProtocol):
    name = NAME
    short_name = "cxr"
    judgement = LabelVerdict
    rules = frozenset({CXR_RULE})
    rule_parameters = frozenset({"min_agree_all"})
    llm_backends = True  # the extractor's and mapper's prompts are written for chest reports

    def taxonomy(self) -> Taxonomy:
        return load_taxonomy("cxr")

    def extractor(self) -> Extractor:
        return RulesExtractor(self.taxonomy())

    def mapper(self) -> Mapper:
        return LexiconMapper(self.taxonomy())

    def draw_sample(self, pool: Sequence[LabelsSuggested], plan: SamplingPlan) -> SampleResult:
        """Label quotas: every label represented, normals included, a spread of difficulty."""
        return draw_sample([candidate_from(s) for s in pool], plan, self.taxonomy().label_ids)

    def review_view(self, suggested: Sequence[Mapping[str, Any]], study_url: str) -> dict[str, Any]:
        return {"label_ids": list(self.taxonomy().label_ids),
                "verdict_rules": dataclasses.asdict(self.verdict_rules())}

    async def read_judgement(self, fields: Mapping[str, Any],
                             context: ReviewContext) -> tuple[LabelVerdict, list[dict]]:
        """A verdict with label corrections that name known labels, add only unsuggested ones and
        remove only suggested ones; a vote that would drop a stated finding must be confirmed."""
        if fields.get("verdict") is None or fields.get("grades") is not None:
            raise JudgementRejected("this read is voted with a `verdict` on the suggested labels, not grades")
        try:
            vote = LabelVerdict(verdict=fields["verdict"], added_labels=fields.get("added_labels") or [],
                                removed_labels=fields.get("removed_labels") or [])
        except ValidationError as exc:
            raise JudgementRejected(f"not a verdict: {exc.errors()[0]['msg']}") from None
        _check_labels(vote, {s["label_id"] for s in context.suggested}, set(self.taxonomy().label_ids))
        corrections = len(set(vote.added_labels)) + len(set(vote.removed_labels))
        check_verdict(vote.verdict, corrections, context.comment, self.verdict_rules())
        asks = omissions(context.suggested, context.unmapped, vote.added_labels, vote.removed_labels)
        if asks and not context.confirm:
            raise NeedsConfirmation(describe(asks), asks, CONFIRMATION_TYPE)
        return vote.model_copy(update={"added_labels": sorted(set(vote.added_labels)),
                                       "removed_labels": sorted(set(vote.removed_labels))}), asks

    def verdict_rules(self) -> VerdictRules:
        """What each verdict means, from the taxonomy file."""
        return VerdictRules.from_extra(self.taxonomy().extra)

    def review_flags(self, accepted: bool, votes: Sequence[Mapping[str, Any]]) -> list[str]:
        """On an accepted study, every reader's corrections stay visible to a curator: the rule
        released the suggestion, but a reader who added a pneumothorax may be the one who is right."""
        return correction_flags(votes) if accepted else []

    def vote_outcome(self, judgement: LabelVerdict) -> str:  # type: ignore[override]
        return judgement.verdict.value

    def benchmark_labels(self) -> Sequence[str]:
        return self.taxonomy().label_ids

    metric = Metric(
        "macro AUROC", higher_is_better=True,
        description="Per label and macro: AUROC, and sensitivity, specificity and F1 at 0.5, each with a"
                    " bootstrap 95% interval. Aggregates only; no per-study output.")

    def submission_format(self) -> SubmissionFormat:
        return SubmissionFormat("study_id", tuple(self.taxonomy().label_ids), 0.0, 1.0)

    def decide(self, study_id: str, votes: Sequence[Mapping[str, Any]], assignment: Mapping[str, Any],
               rule: RuleConfig) -> tuple[Decision, list[CellConsensus]]:
        views = [VoteView(v["reader_id"], Verdict(v["verdict"]), frozenset(v["added_labels"]),
                          frozenset(v["removed_labels"])) for v in votes]
        return decide(rule, views, assignment["suggested"]), []

    def agreement_report(self, studies: Sequence[Mapping[str, Any]], votes: Sequence[Mapping[str, Any]]) -> dict:
        return agreement_report(studies, votes, self.taxonomy().label_ids)

    card_agreement_reads_provenance = False  # kappa, reliability and verdict shares: no AI versus expert

    def card_agreement(self, studies: Sequence[Mapping[str, Any]], votes: Sequence[Mapping[str, Any]]) -> dict:
        return card_agreement(studies, votes, self.taxonomy().label_ids)

    def label_kappas(self, studies: Sequence[Mapping[str, Any]],
                     votes: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
        return kappa_per_label(reader_label_sets(studies, votes), self.taxonomy().label_ids)

    def release_copies(self, release_id: str, rows: Sequence[Mapping[str, Any]],
                       plan: SelectionPlan) -> list[tuple[str, str, str]] | None:
        return release_copies(release_id, self.name, rows, plan, self.taxonomy())

    def compose_release(self, release_id: str, rows: Sequence[Mapping[str, Any]], plan: SelectionPlan,
                        funnel: Mapping[str, int], rule: RuleConfig, agreement: Mapping) -> ComposedRelease:
        composed = compose_release(release_id, self.name, rows, plan, funnel, self.taxonomy(), rule, agreement)
        truth = {s.study_id: sorted(s.labels) for s in composed.holdout}
        return ComposedRelease(composed.files, composed.released, composed.holdout, truth)

    def score_submission(self, text: str, release: Mapping[str, Any], truth: Mapping[str, object],
                         n_bootstrap: int) -> dict:
        """Holdout truth rows are label lists; predictions are `study_id,<label id>...` probabilities."""
        label_ids = self.taxonomy().label_ids
        try:
            preds = scoring.parse_predictions(text, label_ids, release["holdout"])
        except scoring.PredictionFileError as exc:
            raise SubmissionRejected(str(exc)) from None
        truth_sets = {sid: frozenset(labels) for sid, labels in truth.items()}  # type: ignore[arg-type]
        # The bootstrap resamples patients, not studies, where consensus passes the holdout's patients.
        return scoring.score_cxr(truth_sets, preds, label_ids, n_bootstrap=n_bootstrap, seed=0,
                                 patients=release.get("holdout_patients"))


def correction_flags(votes: Sequence[Mapping[str, Any]]) -> list[str]:
    """One `correction:` flag per vote that added or removed labels."""
    flags = []
    for v in votes:
        added, removed = sorted(v.get("added_labels") or []), sorted(v.get("removed_labels") or [])
        if added or removed:
            parts = [f"added {', '.join(added)}"] * bool(added) + [f"removed {', '.join(removed)}"] * bool(removed)
            flags.append(f"correction: {v['reader_id']} ({v['verdict']}) {'; '.join(parts)}")
    return flags


def _check_labels(vote: LabelVerdict, suggested: set[str], known: set[str]) -> None:
    unknown = sorted((set(vote.added_labels) | set(vote.removed_labels)) - known)
    if unknown:
        raise JudgementRejected(f"unknown label(s): {', '.join(unknown)}", unknown_labels=unknown)
    if set(vote.added_labels) & suggested:
        raise JudgementRejected(
            f"cannot add labels already suggested: {', '.join(sorted(set(vote.added_labels) & suggested))}")
    if set(vote.removed_labels) - suggested:
        raise JudgementRejected(
            f"cannot remove labels that were not suggested: {', '.join(sorted(set(vote.removed_labels) - suggested))}")


PROTOCOL = register(CxrLabelVerification())
