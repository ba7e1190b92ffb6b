"""A third curation protocol, defined and registered by the tests alone: binary pneumothorax
triage with a bounding box. No file under services/ names it; importing this module (or naming
it in RADCURATE_PROTOCOLS, as the e2e test does for the service processes) is all it takes.

Reports are read for a non-negated "pneumothorax"; a reader says present or absent and, when
present, draws a box on the image; a study is accepted when every reader agrees, with the
majority's answer; the release is a one-label CSV; a submission is scored by accuracy.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.common.contracts import (
    CellConsensus,
    Finding,
    Judgement,
    LabelsSuggested,
    ModelProvenance,
    SamplingPlan,
    SelectionPlan,
    SuggestedLabel,
)
from services.common.protocols import (
    ComposedRelease,
    CurationProtocol,
    Extractor,
    JudgementRejected,
    Mapper,
    MappingResult,
    ReviewContext,
    SubmissionRejected,
    register,
)
from services.common.protocols.kit.decision import Decision
from services.common.protocols.kit.release import ReleaseStudy, build_release
from services.common.protocols.kit.rule_config import RuleConfig
from services.common.protocols.kit.sampling import Candidate, SampleResult, draw_sample
from services.common.protocols.kit.selection import AcceptedStudy, select_and_split
from services.common.protocols.kit.submission import Metric, SubmissionFormat
from services.common.taxonomy import Taxonomy, parse_taxonomy

NAME = "pneumothorax-triage"
LABEL = "pneumothorax"
RULE = "ptx-unanimous"
TAXONOMY = parse_taxonomy("pneumothorax", {
    "version": "ptx-v1", "protocol": NAME,
    "labels": [{"id": LABEL, "name": "Pneumothorax", "synonyms": ["pneumothorax"]}]})
_SENTENCE = re.compile(r"[^.]*\bpneumothorax\b[^.]*\.?", re.IGNORECASE)
_NEGATED = re.compile(r"\b(no|without|resolved)\b", re.IGNORECASE)
PROVENANCE = ModelProvenance(backend="rules", model="ptx-keyword", prompt_version="ptx-v1")


class Box(BaseModel):
    """Where the reader saw it, in image pixels."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    x: float = Field(ge=0)
    y: float = Field(ge=0)
    width: float = Field(gt=0)
    height: float = Field(gt=0)


class Triage(Judgement):
    protocol: Literal["pneumothorax-triage"] = NAME
    present: bool
    box: Box | None = None

    @model_validator(mode="after")
    def _box_iff_present(self) -> Triage:
        if self.present != (self.box is not None):
            raise ValueError("a box marks a pneumothorax that is present, and only then")
        return self


class KeywordExtractor(Extractor):
    provenance = PROVENANCE

    async def extract(self, report: str) -> list[Finding]:
        return [Finding(text=LABEL, evidence=m.group(0).strip(), evidence_start=m.start(), evidence_end=m.end(),
                        label_hint=LABEL)
                for m in _SENTENCE.finditer(report) if not _NEGATED.search(m.group(0))]


class OneLabelMapper(Mapper):
    provenance = PROVENANCE

    async def map(self, findings: list[Finding]) -> MappingResult:
        evidence = [f.evidence for f in findings if f.label_hint == LABEL]
        return MappingResult([SuggestedLabel(label_id=LABEL, evidence=evidence)] if evidence else [], [])


class PneumothoraxTriage(CurationProtocol):
    name = NAME
    short_name = "ptx"
    judgement = Triage
    rules = frozenset({RULE})

    def taxonomy(self) -> Taxonomy:
        return TAXONOMY

    def extractor(self) -> Extractor:
        return KeywordExtractor()

    def mapper(self) -> Mapper:
        return OneLabelMapper()

    def draw_sample(self, pool: Sequence[LabelsSuggested], plan: SamplingPlan) -> SampleResult:
        candidates = [Candidate(s.study_id, s.patient_id, frozenset(lb.label_id for lb in s.labels)) for s in pool]
        return draw_sample(candidates, plan, TAXONOMY.label_ids)

    def review_view(self, suggested: Sequence[Mapping[str, Any]], study_url: str) -> dict[str, Any]:
        return {"label_ids": [LABEL]}

    async def read_judgement(self, fields: Mapping[str, Any], context: ReviewContext) -> tuple[Triage, list[dict]]:
        try:
            return Triage(present=fields.get("present"), box=fields.get("box")), []
        except ValidationError as exc:
            raise JudgementRejected(f"not a triage: {exc.errors()[0]['msg']}") from None

    def vote_outcome(self, judgement: Triage) -> str:  # type: ignore[override]
        return "present" if judgement.present else "absent"

    metric = Metric("AUROC of pneumothorax", higher_is_better=True,
                    description="AUROC of the pneumothorax probability against the holdout's triage.")

    def submission_format(self) -> SubmissionFormat:
        return SubmissionFormat("study_id", (LABEL,), 0.0, 1.0)

    def decide(self, study_id: str, votes: Sequence[Mapping[str, Any]], assignment: Mapping[str, Any],
               rule: RuleConfig) -> tuple[Decision, list[CellConsensus]]:
        present = sum(bool(v["present"]) for v in votes)
        unanimous = present in (0, len(votes))
        labels = (LABEL,) if 2 * present > len(votes) else ()
        return Decision(accepted=unanimous, labels=labels, rule=rule.rule, rule_version=rule.version,
                        needs_adjudication=not unanimous,
                        reason=f"{present} of {len(votes)} readers saw a pneumothorax"), []

    def agreement_report(self, studies: Sequence[Mapping[str, Any]], votes: Sequence[Mapping[str, Any]]) -> dict:
        return {"protocol": NAME, "studies": len(studies), "votes": len(votes),
                "present_share": sum(bool(v["present"]) for v in votes) / len(votes) if votes else None}

    def compose_release(self, release_id: str, rows: Sequence[Mapping[str, Any]], plan: SelectionPlan,
                        funnel: Mapping[str, int], rule: RuleConfig, agreement: Mapping) -> ComposedRelease:
        studies = {r["study_id"]: ReleaseStudy(r["study_id"], r["patient_id"], frozenset(r["labels"]),
                                               tuple(r["objects"])) for r in rows}
        split = select_and_split([AcceptedStudy(s.study_id, s.patient_id, s.labels) for s in studies.values()],
                                 plan, TAXONOMY.label_ids)
        released = [studies[sid] for sid in split.released]
        holdout = [studies[sid] for sid in split.holdout]
        card = {"release_id": release_id, "protocol": NAME, "rule": rule.describe(), "funnel": dict(funnel),
                "agreement": dict(agreement)}
        files = build_release(release_id, protocol=NAME, released=released, holdout=holdout,
                              label_ids=TAXONOMY.label_ids, card=card)
        return ComposedRelease(files, released, holdout, {s.study_id: sorted(s.labels) for s in holdout})

    def score_submission(self, text: str, release: Mapping[str, Any], truth: Mapping[str, object],
                         n_bootstrap: int) -> dict:
        rows = list(csv.DictReader(io.StringIO(text)))
        if {r.get("study_id") for r in rows} != set(release["holdout"]):
            raise SubmissionRejected("the file must have one row per holdout study")
        try:
            called = {r["study_id"]: float(r[LABEL]) >= 0.5 for r in rows}
        except (KeyError, TypeError, ValueError):
            raise SubmissionRejected(f"every row needs a probability in column {LABEL!r}") from None
        right = sum(called[sid] == (LABEL in labels) for sid, labels in truth.items())  # type: ignore[operator]
        return {"metric_version": "ptx-accuracy/1", "accuracy": right / len(truth), "studies": len(truth)}


PROTOCOL = register(PneumothoraxTriage())
