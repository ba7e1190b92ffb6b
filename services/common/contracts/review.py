"""Review: reads assigned and moved between readers (sampler), and the votes readers cast (gateway)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SerializeAsAny, model_validator

from services.common.contracts.envelope import Event, ProtocolName, Topic
from services.common.contracts.extraction import Finding, ModelProvenance, SuggestedLabel
from services.common.contracts.ingest import ObjectsManifest


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


class Verdict(StrEnum):
    """A reader's judgement of the suggested labels (CXR protocol)."""

    AGREE_ALL = "agree_all"
    AGREE_MOSTLY = "agree_mostly"
    DISAGREE = "disagree"


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
