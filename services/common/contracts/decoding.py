"""Decoding a message: its event class by `event_type`, old schema versions upcast first."""

from __future__ import annotations

from typing import Any

from services.common.contracts.consensus import AdjudicationRequested, ConsensusReached, StudyAdjudicated
from services.common.contracts.envelope import Event, Protocol
from services.common.contracts.evaluation import EvaluationCompleted, EvaluationRequested, ReportReady, ReportRequested
from services.common.contracts.extraction import FindingsExtracted, LabelsSuggested
from services.common.contracts.ingest import ReportIngested
from services.common.contracts.release import BenchmarkReleased, SelectionRequested
from services.common.contracts.review import (
    ReassignmentRequested,
    ReviewAssigned,
    ReviewReoffered,
    VoteCast,
    legacy_judgement,
)
from services.common.contracts.sampling import SamplingCompleted, SamplingRequested

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
