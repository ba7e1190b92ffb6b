"""Decoding a message: its event class by `event_type`, old schema versions upcast first.

`decode_event` reads a message's bytes; `parse_event` a message already parsed into a dict.
"""

from __future__ import annotations

import json
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

# One event class per topic (each class names its topic): the class a topic's messages are read
# with first (`decode_event`).
EVENT_BY_TOPIC: dict[str, type[Event]] = {cls.topic.value: cls for cls in EVENT_TYPES.values()}
assert len(EVENT_BY_TOPIC) == len(EVENT_TYPES), "two event classes share a topic"


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


def decode_event(value: bytes | str, topic: str | None = None) -> Event:
    """Decode a message's bytes into its event class, as `parse_event(json.loads(value))` does.

    The fast path: a message on `topic` is most often the topic's own event class at its current
    schema version, which pydantic validates straight from the bytes (`model_validate_json`: one
    pass in Rust, no Python dict of the whole message first) at about a third of the CPU of
    `json.loads` + `model_validate` (a consumer decodes every event: at every hop of the funnel).
    It is taken only when the message itself names that class's `event_type` and current
    `schema_version` (a field left to its default is not taken on trust: a message without them
    is an old or a foreign one, which `parse_event` reads as it always has). Anything else — an
    old schema to upcast, another event type, a message that does not validate — goes the slow
    path, so the result, and every error with its message, is exactly `parse_event`'s."""
    cls = EVENT_BY_TOPIC.get(topic) if topic is not None else None
    if cls is not None:
        try:
            event = cls.model_validate_json(value)
        except Exception:  # noqa: BLE001 - parse_event gives the answer, and the error, it always gave
            pass
        else:
            given = event.model_fields_set
            if ("event_type" in given and "schema_version" in given
                    and event.schema_version == cls.model_fields["schema_version"].default):
                return event
    return parse_event(json.loads(value))
