"""Event contracts: the one place where the shape of every Kafka message is defined.

Events are facts (past tense), commands are requests (imperative). Every message carries the
envelope fields (`envelope.Event`); `study_id` is the Kafka key so one study's events stay ordered
on one partition. When a shape changes, bump `schema_version` and register an upcaster in
`UPCASTERS` (`decoding.py`) instead of breaking readers that still see old messages on the topic.

One module per flow, in the order a study travels: `ingest`, `extraction` (findings, then
suggested labels), `sampling`, `review` (assignments and votes), `consensus` (decisions and
adjudication), `release`, `evaluation` (agreement reports and scored submissions). Everything is
re-exported here, so callers import from `services.common.contracts`.
"""

from services.common.contracts.consensus import (
    AdjudicationRequested,
    CellConsensus,
    ConsensusReached,
    StudyAdjudicated,
)
from services.common.contracts.decoding import (
    EVENT_BY_TOPIC,
    EVENT_TYPES,
    UPCASTERS,
    UnknownEvent,
    decode_event,
    parse_event,
)
from services.common.contracts.envelope import Event, Protocol, ProtocolName, Topic
from services.common.contracts.evaluation import (
    EvaluationCompleted,
    EvaluationRequested,
    ReportKind,
    ReportReady,
    ReportRequested,
)
from services.common.contracts.extraction import (
    Certainty,
    Finding,
    FindingsExtracted,
    LabelsSuggested,
    Laterality,
    ModelProvenance,
    SuggestedLabel,
)
from services.common.contracts.ingest import DicomObject, ObjectsManifest, ReportIngested
from services.common.contracts.release import BenchmarkReleased, LabelBounds, SelectionPlan, SelectionRequested
from services.common.contracts.review import (
    AnyJudgement,
    CellGrade,
    CellPoint,
    Judgement,
    ReassignmentRequested,
    ReviewAssigned,
    ReviewReoffered,
    Verdict,
    VoteCast,
    legacy_judgement,
)
from services.common.contracts.sampling import SamplingCompleted, SamplingPlan, SamplingRequested

__all__ = [
    "EVENT_BY_TOPIC", "EVENT_TYPES", "UPCASTERS", "AdjudicationRequested", "AnyJudgement", "BenchmarkReleased",
    "CellConsensus", "CellGrade", "CellPoint", "Certainty", "ConsensusReached", "DicomObject", "EvaluationCompleted",
    "EvaluationRequested", "Event", "Finding", "FindingsExtracted", "Judgement", "LabelBounds", "LabelsSuggested",
    "Laterality", "ModelProvenance", "ObjectsManifest", "Protocol", "ProtocolName", "ReassignmentRequested",
    "ReportIngested", "ReportKind", "ReportReady", "ReportRequested", "ReviewAssigned", "ReviewReoffered",
    "SamplingCompleted", "SamplingPlan",
    "SamplingRequested", "SelectionPlan", "SelectionRequested", "StudyAdjudicated", "SuggestedLabel", "Topic",
    "UnknownEvent", "Verdict", "VoteCast", "decode_event", "legacy_judgement", "parse_event",
]
