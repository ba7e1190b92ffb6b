"""Consensus: a study's decision under its protocol's rule, and a curator's adjudication beside it."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.common.contracts.envelope import Event, ProtocolName, Topic
from services.common.contracts.review import CellGrade, CellPoint


class CellConsensus(BaseModel):
    """The decided grade (and averaged point) of one cell, and how it was decided."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cell_id: str
    grade: str
    method: str  # "majority" | "median"
    adjudicate: bool = False
    point: CellPoint | None = None


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
