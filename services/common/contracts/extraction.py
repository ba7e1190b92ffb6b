"""Reading the report: findings extracted (extractor), then mapped to the protocol's labels (mapper)."""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.common.contracts.envelope import Event, ProtocolName, Topic
from services.common.contracts.ingest import ObjectsManifest


class Certainty(StrEnum):
    PRESENT = "present"
    UNCERTAIN = "uncertain"


class Laterality(StrEnum):
    LEFT = "left"
    RIGHT = "right"
    BILATERAL = "bilateral"
    NONE = "none"


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
