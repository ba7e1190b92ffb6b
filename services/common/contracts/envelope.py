"""The envelope every message shares, the topics, and the protocol names events carry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


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
