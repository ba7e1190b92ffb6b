"""Event contracts: the one place where the shape of every Kafka message is defined.

Events are facts (past tense), commands are requests (imperative). Every message carries the
envelope fields; `study_id` is the Kafka key so one study's events stay ordered on one partition.
When a shape changes, bump `schema_version` and register an upcaster in `UPCASTERS` instead of
breaking readers that still see old messages on the topic.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SerializeAsAny, model_validator


class Protocol(StrEnum):
    """The built-in curation protocols' names (a protocol is a plug-in: `services.common.protocols`;
    events carry any registered name, see `ProtocolName`)."""

    CXR = "cxr-label-verification"
    LUMBAR = "lumbar-grading"


def _registered(name: str) -> str:
    """A protocol name the registry knows; anything else fails validation (no fallback protocol)."""
    from services.common import protocols  # the registry imports plug-ins that import this module

    if not protocols.is_known(name):
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(protocols.names())}")
    return str(name)


ProtocolName = Annotated[str, AfterValidator(_registered)]


class Verdict(StrEnum):
    """A reader's judgement of the suggested labels (CXR protocol)."""

    AGREE_ALL = "agree_all"
    AGREE_MOSTLY = "agree_mostly"
    DISAGREE = "disagree"


class Certainty(StrEnum):
    PRESENT = "present"
    UNCERTAIN = "uncertain"


class Laterality(StrEnum):
    LEFT = "left"
    RIGHT = "right"
    BILATERAL = "bilateral"
    NONE = "none"


class Topic(StrEnum):
    """Kafka topics. Dead letters go to `<topic>.dlq`."""

    REPORT_INGESTED = "report-ingested"
    FINDINGS_EXTRACTED = "findings-extracted"
    LABELS_SUGGESTED = "labels-suggested"
    SAMPLING_REQUESTED = "sampling-requested"
    REVIEW_ASSIGNED = "review-assigned"
    VOTE_CAST = "vote-cast"
    CONSENSUS_REACHED = "consensus-reached"
    SELECTION_REQUESTED = "selection-requested"
    BENCHMARK_RELEASED = "benchmark-released"
    SAMPLING_COMPLETED = "sampling-completed"
    REVIEW_REOFFERED = "review-reoffered"
    REASSIGNMENT_REQUESTED = "reassignment-requested"

    ADJUDICATION_REQUESTED = "adjudication-requested"
    STUDY_ADJUDICATED = "study-adjudicated"
    REPORT_REQUESTED = "report-requested"
    REPORT_READY = "report-ready"
    EVALUATION_REQUESTED = "evaluation-requested"
    EVALUATION_COMPLETED = "evaluation-completed"

    @property
    def dlq(self) -> str:
        return f"{self.value}.dlq"


def _now() -> datetime:
    return datetime.now(UTC)


def _uuid() -> str:
    return str(uuid.uuid4())


class Event(BaseModel):
    """The envelope every message shares."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: ClassVar[Topic]
    event_type: str
    schema_version: int = 1
    event_id: str = Field(default_factory=_uuid)
    occurred_at: datetime = Field(default_factory=_now)
    correlation_id: str = Field(default_factory=_uuid)
    study_id: str

    def key(self) -> bytes:
        return self.study_id.encode()


# --- payload parts ------------------------------------------------------------------------


class DicomObject(BaseModel):
    """One stored DICOM instance: where it lives in the object store, and what it is."""

    model_config = ConfigDict(frozen=True)

    object_key: str  # content-addressed: sha256 of the bytes
    sha256: str
    sop_instance_uid: str
    series_instance_uid: str
    series_description: str = ""
    instance_number: int = 1
    modality: str = ""
    # DICOM PixelSpacing (row, column) in mm; lumbar consensus averages reader points in mm with it.
    pixel_spacing: tuple[float, float] | None = None


class ObjectsManifest(BaseModel):
    """A study's DICOM instance list, as events carry it (schema 3): by reference. The list itself
    is a JSON object in the objects bucket (`services.common.manifests`), written before the event
    is recorded, so an event's size does not grow with the study (a lumbar MRI of 2,400 instances
    would be ~1 MB inline, over the broker's limit); `count` says how many instances it lists.

    Events written before schema 3 carried the list itself: the upcaster moves it into `inline`
    (no key, no sha256), and readers get it from there without a fetch. New events never do."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = ""  # manifests/<study_id>/<sha256>.json in the objects bucket
    sha256: str = ""  # of the object's bytes: a reader verifies it before trusting the list
    count: int = Field(0, ge=0)
    inline: list[DicomObject] = Field(default_factory=list)  # only in upcast schema-2 events

    @property
    def by_reference(self) -> bool:
        return bool(self.key)

    @model_validator(mode="after")
    def _by_key_or_inline(self) -> ObjectsManifest:
        if self.key:
            if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
                raise ValueError("a manifest referenced by key carries the sha256 (64 hex digits) of its bytes")
            if self.inline:
                raise ValueError("a manifest is referenced by key or carried inline, not both")
        elif self.sha256:
            raise ValueError("a manifest's sha256 comes with its key")
        elif self.count != len(self.inline):
            raise ValueError(f"an inline manifest of {len(self.inline)} objects says count {self.count}")
        return self


class Finding(BaseModel):
    """An abnormal finding read from a report."""

    model_config = ConfigDict(frozen=True)

    text: str  # the finding as named in the report, e.g. "left basilar opacity"
    certainty: Certainty = Certainty.PRESENT
    laterality: Laterality = Laterality.NONE
    evidence: str  # the sentence it came from
    evidence_start: int = 0  # character span of the evidence in the report
    evidence_end: int = 0
    label_hint: str | None = None  # the taxonomy label the extractor matched, if any
    # how firmly the report asserts it, 0-1, when the extractor grades hedges ("probable" above
    # "possible") and loose descriptors ("airspace opacity" for pneumonia); None: not graded
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)


class SuggestedLabel(BaseModel):
    """A taxonomy label proposed for a study, with why."""

    model_config = ConfigDict(frozen=True)

    label_id: str  # CXR: a taxonomy label; lumbar: a cell "<condition>_<level>"
    confidence: float = 1.0
    uncertain: bool = False
    evidence: list[str] = Field(default_factory=list)
    grade: str | None = None  # lumbar only: "Normal/Mild" | "Moderate" | "Severe"


class ModelProvenance(BaseModel):
    """Which backend produced a result: recorded on every extraction and suggestion."""

    model_config = ConfigDict(frozen=True)

    backend: str  # "rules" | "lexicon" | "llm"
    model: str = ""
    prompt_version: str = ""


# --- events -------------------------------------------------------------------------------


class ReportIngested(Event):
    topic: ClassVar[Topic] = Topic.REPORT_INGESTED
    event_type: Literal["ReportIngested"] = "ReportIngested"
    schema_version: int = 3
    protocol: ProtocolName
    patient_id: str
    study_instance_uid: str
    report_text: str
    objects_manifest: ObjectsManifest


class FindingsExtracted(Event):
    topic: ClassVar[Topic] = Topic.FINDINGS_EXTRACTED
    event_type: Literal["FindingsExtracted"] = "FindingsExtracted"
    schema_version: int = 3
    protocol: ProtocolName
    patient_id: str
    findings: list[Finding]
    provenance: ModelProvenance
    objects_manifest: ObjectsManifest = Field(default_factory=ObjectsManifest)


class LabelsSuggested(Event):
    topic: ClassVar[Topic] = Topic.LABELS_SUGGESTED
    event_type: Literal["LabelsSuggested"] = "LabelsSuggested"
    schema_version: int = 3
    protocol: ProtocolName
    patient_id: str
    taxonomy_version: str
    labels: list[SuggestedLabel]
    unmapped_findings: list[Finding] = Field(default_factory=list)
    extraction: ModelProvenance
    mapping: ModelProvenance
    objects_manifest: ObjectsManifest = Field(default_factory=ObjectsManifest)


class SamplingPlan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(1000, ge=1)
    readers_per_study: int = Field(3, ge=1)
    min_per_label: int = Field(25, ge=0)
    max_label_share: float = Field(0.35, gt=0, le=1)  # cap on the dominant labels
    no_finding_share: float = Field(0.10, ge=0, le=1)
    seed: int = 0
    # A read not voted within this many seconds moves to another reader; None: the sampler's default.
    lease_seconds: float | None = Field(None, gt=0)


class SamplingRequested(Event):
    """Command: draw a review sample from the candidate pool and assign readers."""

    topic: ClassVar[Topic] = Topic.SAMPLING_REQUESTED
    event_type: Literal["SamplingRequested"] = "SamplingRequested"
    schema_version: int = 2
    run_id: str
    protocol: ProtocolName
    plan: SamplingPlan
    panel: list[str]  # reader user ids
    # Wait until the pool holds at least this many studies (the curator's ingest count), so a
    # request racing ahead of the last labels-suggested events does not sample a partial pool.
    min_pool_size: int = 0
    # Per reader: the most studies they may hold in total, and study ids they must not read.
    capacity: dict[str, int] = Field(default_factory=dict)
    exclusions: dict[str, list[str]] = Field(default_factory=dict)


class ReviewAssigned(Event):
    topic: ClassVar[Topic] = Topic.REVIEW_ASSIGNED
    event_type: Literal["ReviewAssigned"] = "ReviewAssigned"
    schema_version: int = 3
    protocol: ProtocolName
    run_id: str
    patient_id: str
    readers: list[str]
    reason: str
    difficulty: str
    suggested: list[SuggestedLabel]
    unmapped_findings: list[Finding] = Field(default_factory=list)
    taxonomy_version: str
    extraction: ModelProvenance
    mapping: ModelProvenance
    objects_manifest: ObjectsManifest = Field(default_factory=ObjectsManifest)


class CellPoint(BaseModel):
    """Where a reader saw a finding: image pixel coordinates on one instance of one series."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    series_instance_uid: str
    instance_number: int = Field(ge=1)
    x: float = Field(ge=0)
    y: float = Field(ge=0)


class CellGrade(BaseModel):
    """A reader's grade of one condition x level (`cell_id = <condition>_<level>`), lumbar protocol."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cell_id: str
    grade: str  # "Normal/Mild" | "Moderate" | "Severe"
    point: CellPoint | None = None


class CellConsensus(BaseModel):
    """The decided grade (and averaged point) of one cell, and how it was decided."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cell_id: str
    grade: str
    method: str  # "majority" | "median"
    adjudicate: bool = False
    point: CellPoint | None = None


def _open_on_the_wire(schema: dict[str, Any], cls: type) -> None:
    """The base's JSON schema admits the fields each protocol's subclass adds (its own schema is exact)."""
    if cls is Judgement:
        schema["additionalProperties"] = True


class Judgement(BaseModel):
    """What a reader submits, tagged with its protocol: a tagged union open to plug-ins. Each
    protocol defines its own subclass (`CurationProtocol.judgement`, e.g. a verdict with label
    corrections, or a grade per cell); `protocol` is the tag that picks it when a vote is read."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=_open_on_the_wire)

    protocol: str


def _judgement_of_its_protocol(value: Any) -> Any:
    """Validate a judgement with the model of the protocol it is tagged with."""
    if isinstance(value, Judgement) or not isinstance(value, dict):
        return value
    from services.common import protocols  # the registry imports plug-ins that import this module

    if "protocol" not in value:
        raise ValueError("a judgement names its protocol")
    return protocols.get(value["protocol"]).judgement.model_validate(value)


AnyJudgement = Annotated[SerializeAsAny[Judgement], BeforeValidator(_judgement_of_its_protocol)]


def legacy_judgement(protocol: str, fields: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 vote's judgement (a verdict with label corrections, or a grade per cell, in flat
    fields) as the tagged judgement that replaced them: for old events and old rows."""
    if fields.get("grades") is not None:
        return {"protocol": protocol, "grades": fields["grades"]}
    return {"protocol": protocol, "verdict": fields.get("verdict"),
            "added_labels": list(fields.get("added_labels") or []),
            "removed_labels": list(fields.get("removed_labels") or [])}


class VoteCast(Event):
    """A reader's vote: the protocol's judgement (schema 2; schema 1 carried a CXR verdict or
    lumbar grades in flat fields, upcast on read)."""

    topic: ClassVar[Topic] = Topic.VOTE_CAST
    event_type: Literal["VoteCast"] = "VoteCast"
    schema_version: int = 2
    protocol: ProtocolName
    vote_id: str
    assignment_id: str
    reader_id: str
    judgement: AnyJudgement
    comment: str = ""
    seconds_spent: float | None = None

    @model_validator(mode="after")
    def _judgement_of_this_protocol(self) -> VoteCast:
        if self.judgement.protocol != self.protocol:
            raise ValueError(f"a {self.protocol} vote carries a {self.judgement.protocol} judgement")
        return self


class ConsensusReached(Event):
    topic: ClassVar[Topic] = Topic.CONSENSUS_REACHED
    event_type: Literal["ConsensusReached"] = "ConsensusReached"
    schema_version: int = 2
    protocol: ProtocolName
    accepted: bool
    rule: str
    rule_version: str
    labels: list[str]  # the label set that enters the benchmark if accepted
    vote_ids: list[str]
    cells: list[CellConsensus] = Field(default_factory=list)  # lumbar: one per graded cell


class LabelBounds(BaseModel):
    """A curator's per-label override of the plan's minimum and maximum (benchmark studies)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> LabelBounds:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class SelectionPlan(BaseModel):
    """The benchmark a curator asks for. The composition fields were added later with defaults, so
    an older SelectionRequested still parses (and gets today's REVEAL-like composition).

    Defaults and why: REVEAL-CXR prioritised rare and multi-label studies, but a benchmark with no
    normal and no single-label study measures specificity only among abnormal, heavily co-occurring
    studies, and lets a model that recognises one syndrome (heart failure: cardiomegaly, edema,
    effusion) score on three labels at once. So: 10 % normals and 25 % single-label studies (the
    rest multi-label), no label on more than 35 % of the studies, no pair of labels on more than
    15 %. A share of None restores "by priority only" (normals only fill, singles compete)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_size: int = Field(200, ge=2)
    holdout_fraction: float = Field(0.5, gt=0, lt=1)
    min_per_label: int = Field(5, ge=0)
    seed: int = 0
    normal_share: float | None = Field(0.10, ge=0, le=1)
    single_label_share: float | None = Field(0.25, ge=0, le=1)
    max_label_share: float = Field(0.35, gt=0, le=1)  # default cap for every label
    max_pair_share: float = Field(0.15, gt=0, le=1)  # cap on studies carrying any one pair of labels
    label_bounds: dict[str, LabelBounds] = Field(default_factory=dict)  # per-label min / max overrides

    @model_validator(mode="after")
    def _shares_fit(self) -> SelectionPlan:
        if (self.normal_share or 0) + (self.single_label_share or 0) > 1:
            raise ValueError("normal_share + single_label_share must not exceed 1")
        return self


class SelectionRequested(Event):
    """Command: choose the benchmark from accepted studies and release it. `study_id` is the run id."""

    topic: ClassVar[Topic] = Topic.SELECTION_REQUESTED
    event_type: Literal["SelectionRequested"] = "SelectionRequested"
    schema_version: int = 2
    release_id: str
    protocol: ProtocolName
    plan: SelectionPlan
    funnel: dict[str, int] = Field(default_factory=dict)  # upstream counts for the dataset card


class BenchmarkReleased(Event):
    topic: ClassVar[Topic] = Topic.BENCHMARK_RELEASED
    event_type: Literal["BenchmarkReleased"] = "BenchmarkReleased"
    schema_version: int = 2
    release_id: str
    protocol: ProtocolName
    released_count: int
    holdout_count: int
    manifest_key: str
    manifest_sha256: str


class SamplingCompleted(Event):
    """The outcome of a sampling run, for curators: what was drawn and which quotas the pool could
    not meet. `study_id` is the run id; each study's reason travels on its review-assigned event."""

    topic: ClassVar[Topic] = Topic.SAMPLING_COMPLETED
    event_type: Literal["SamplingCompleted"] = "SamplingCompleted"
    schema_version: int = 2
    run_id: str
    protocol: ProtocolName
    status: Literal["completed", "failed"] = "completed"
    pool_size: int = 0
    n_selected: int = 0
    unmet_quotas: list[str] = Field(default_factory=list)
    tiers: dict[str, int] = Field(default_factory=dict)
    label_counts: dict[str, int] = Field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""


class ReviewReoffered(Event):
    """A study's assignment moved from one reader to another (lease expired, or a curator asked).
    `readers` is the study's reader set after the move."""

    topic: ClassVar[Topic] = Topic.REVIEW_REOFFERED
    event_type: Literal["ReviewReoffered"] = "ReviewReoffered"
    schema_version: int = 2
    protocol: ProtocolName
    run_id: str
    from_reader: str
    to_reader: str
    readers: list[str]
    reason: str


class ReassignmentRequested(Event):
    """Command (curator): move one reader's open assignment to another eligible reader
    (`to_reader`, or the least-loaded eligible one when None)."""

    topic: ClassVar[Topic] = Topic.REASSIGNMENT_REQUESTED
    event_type: Literal["ReassignmentRequested"] = "ReassignmentRequested"
    from_reader: str
    to_reader: str | None = None
    requested_by: str
    reason: str = ""


class AdjudicationRequested(Event):
    """Command (curator): settle a flagged study. Consensus records it next to, never over, the
    rule's decision, so the audit trail keeps both. `study_id` is the study."""

    topic: ClassVar[Topic] = Topic.ADJUDICATION_REQUESTED
    event_type: Literal["AdjudicationRequested"] = "AdjudicationRequested"
    adjudication_id: str
    curator_id: str
    accepted: bool
    labels: list[str] = Field(default_factory=list)
    note: str = ""
    # A grid protocol's disputed cells as the curator grades them (grade and point); the study's
    # protocol checks them. Absent in requests from before cells could be adjudicated.
    cells: list[CellGrade] = Field(default_factory=list)


class StudyAdjudicated(Event):
    """A curator's adjudication took effect: the study's decision is now `accepted` / `labels`."""

    topic: ClassVar[Topic] = Topic.STUDY_ADJUDICATED
    event_type: Literal["StudyAdjudicated"] = "StudyAdjudicated"
    schema_version: int = 2
    protocol: ProtocolName
    adjudication_id: str
    curator_id: str
    accepted: bool
    labels: list[str]
    previous_accepted: bool
    rule: str
    rule_version: str
    cells: list[CellConsensus] = Field(default_factory=list)  # a grid protocol's cells after the ruling


# agreement: the agreement / AI-vs-expert report; release-preview: the dataset card a release
# with `plan` would carry if requested now (counts and prevalence only; nothing is written).
ReportKind = Literal["agreement", "release-preview"]


class ReportRequested(Event):
    """Command (curator): compute a report from consensus's tables. `study_id` is the report id."""

    topic: ClassVar[Topic] = Topic.REPORT_REQUESTED
    event_type: Literal["ReportRequested"] = "ReportRequested"
    schema_version: int = 2
    report_id: str
    protocol: ProtocolName
    kind: ReportKind = "agreement"
    plan: SelectionPlan | None = None  # release-preview: the plan to try


class ReportReady(Event):
    """The report asked for: aggregate figures only, never a study's labels."""

    topic: ClassVar[Topic] = Topic.REPORT_READY
    event_type: Literal["ReportReady"] = "ReportReady"
    schema_version: int = 2
    report_id: str
    protocol: ProtocolName
    kind: ReportKind = "agreement"
    report: dict[str, Any]


class EvaluationRequested(Event):
    """Command (evaluator): score a prediction file against a release's holdout.
    `study_id` is the evaluation id. The file lives in the objects bucket under `submission_key`
    (events stay small: a lumbar submission is ~900 kB); `predictions_csv` is only read from
    messages written before the key existed (additive change, no upcaster needed)."""

    topic: ClassVar[Topic] = Topic.EVALUATION_REQUESTED
    event_type: Literal["EvaluationRequested"] = "EvaluationRequested"
    evaluation_id: str
    evaluator_id: str
    release_id: str
    submission_sha256: str
    submission_key: str = ""
    predictions_csv: str = ""

    @model_validator(mode="after")
    def _file_by_key_or_inline(self) -> EvaluationRequested:
        if not (self.submission_key or self.predictions_csv):
            raise ValueError("an evaluation request names its file (submission_key) or carries it")
        return self


class EvaluationCompleted(Event):
    """The outcome of an evaluation: aggregate metrics and a receipt, or why the file was refused."""

    topic: ClassVar[Topic] = Topic.EVALUATION_COMPLETED
    event_type: Literal["EvaluationCompleted"] = "EvaluationCompleted"
    evaluation_id: str
    evaluator_id: str
    release_id: str
    status: Literal["scored", "rejected"]
    result: dict[str, Any] | None = None
    error: str = ""
    receipt: str = ""
    metric_version: str = ""


AnyEvent = Annotated[
    ReportIngested
    | FindingsExtracted
    | LabelsSuggested
    | SamplingRequested
    | ReviewAssigned
    | VoteCast
    | ConsensusReached
    | SelectionRequested
    | BenchmarkReleased
    | SamplingCompleted
    | ReviewReoffered
    | ReassignmentRequested
    | AdjudicationRequested
    | StudyAdjudicated
    | ReportRequested
    | ReportReady
    | EvaluationRequested
    | EvaluationCompleted,
    Field(discriminator="event_type"),
]

EVENT_TYPES: dict[str, type[Event]] = {
    cls.model_fields["event_type"].default: cls
    for cls in (
        ReportIngested,
        FindingsExtracted,
        LabelsSuggested,
        SamplingRequested,
        ReviewAssigned,
        VoteCast,
        ConsensusReached,
        SelectionRequested,
        BenchmarkReleased,
        SamplingCompleted,
        ReviewReoffered,
        ReassignmentRequested,
        AdjudicationRequested,
        StudyAdjudicated,
        ReportRequested,
        ReportReady,
        EvaluationRequested,
        EvaluationCompleted,
    )
}

def _protocol_was_cxr(raw: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 -> 2: `protocol` became required. A schema-1 message without one predates the
    second protocol, so it was a CXR one (the default it was written under)."""
    return {**raw, "protocol": raw.get("protocol") or Protocol.CXR.value, "schema_version": 2}


def _vote_judgement(raw: dict[str, Any]) -> dict[str, Any]:
    """VoteCast schema 1 -> 2: the flat verdict / label corrections / grades become `judgement`."""
    raw = _protocol_was_cxr(raw)
    flat = {k: raw.pop(k) for k in ("verdict", "added_labels", "removed_labels", "grades") if k in raw}
    return {**raw, "judgement": legacy_judgement(raw["protocol"], flat)}


def _objects_inline(raw: dict[str, Any]) -> dict[str, Any]:
    """Schema 2 -> 3: the instance list moved to the object store (`objects_manifest`, by key and
    sha256). A schema-2 message carried the list itself; it reads as an inline manifest."""
    raw = dict(raw)
    objects = raw.pop("objects", None) or []
    raw.setdefault("objects_manifest", {"count": len(objects), "inline": objects})
    return {**raw, "schema_version": 3}


# Events whose instance list left the event in schema 3.
_WITH_OBJECTS = ("ReportIngested", "FindingsExtracted", "LabelsSuggested", "ReviewAssigned")

# (event_type, schema_version) -> function turning that raw dict into the next version's dict.
UPCASTERS: dict[tuple[str, int], Any] = {
    **{(name, 1): _protocol_was_cxr for name, cls in EVENT_TYPES.items()
       if "protocol" in cls.model_fields and name != "VoteCast"},
    ("VoteCast", 1): _vote_judgement,
    **{(name, 2): _objects_inline for name in _WITH_OBJECTS},
}


class UnknownEvent(ValueError):
    """A message whose event_type no reader knows."""


def parse_event(raw: dict[str, Any]) -> Event:
    """Decode a message body into its event class, upcasting old schema versions first."""
    event_type = raw.get("event_type")
    cls = EVENT_TYPES.get(event_type)  # type: ignore[arg-type]
    if cls is None:
        raise UnknownEvent(f"unknown event_type {event_type!r}")
    current = cls.model_fields["schema_version"].default
    version = int(raw.get("schema_version", 1))
    while version < current:
        raw = UPCASTERS[(event_type, version)](raw)
        version = int(raw["schema_version"])
    return cls.model_validate(raw)
