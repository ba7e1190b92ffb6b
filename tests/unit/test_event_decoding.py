"""Decoding a message's bytes (`decode_event`, what every consumer runs on every record): its fast
path reads the topic's own event class straight from the bytes, and for every message, fast path
or not, the result or the error is exactly `parse_event(json.loads(...))`'s."""

from __future__ import annotations

import json
from typing import Any

import pytest

from services.common.contracts import (
    EVENT_BY_TOPIC,
    EVENT_TYPES,
    DicomObject,
    Finding,
    FindingsExtracted,
    LabelsSuggested,
    ModelProvenance,
    ObjectsManifest,
    Protocol,
    ReportIngested,
    SuggestedLabel,
    Topic,
    Verdict,
    VoteCast,
    decode_event,
    parse_event,
)
from services.common.contracts import decoding as decoding_module
from services.common.protocols.cxr.judgement import LabelVerdict
from services.common.protocols.lumbar.judgement import GradeGrid

_OBJECT = DicomObject(object_key="a" * 64, sha256="a" * 64, sop_instance_uid="1.2.3.4", series_instance_uid="1.2.3",
                      modality="CR", pixel_spacing=(0.14, 0.14), pixel_sha256="b" * 64, patient_key="c" * 64)
_FINDING = Finding(text="right basilar opacity", evidence="Right basilar opacity, probably pneumonia.",
                   evidence_start=10, evidence_end=51, label_hint="pneumonia", confidence=0.8)


def current_events() -> list[Any]:
    """One event of each shape the funnel and the votes carry, at its current schema version."""
    manifest = ObjectsManifest(count=1, inline=[_OBJECT])
    rules = ModelProvenance(backend="rules", model="", prompt_version="")
    return [
        ReportIngested(study_id="S1", patient_id="P1", study_instance_uid="1.2.3", protocol=Protocol.CXR,
                       report_text="Right basilar opacity, probably pneumonia. Ünïcode ✓ \u2028",
                       objects_manifest=manifest),
        FindingsExtracted(study_id="S1", patient_id="P1", protocol=Protocol.CXR, findings=[_FINDING, _FINDING],
                          provenance=rules, objects_manifest=manifest),
        LabelsSuggested(study_id="S1", patient_id="P1", protocol=Protocol.CXR, taxonomy_version="cxr-1",
                        labels=[SuggestedLabel(label_id="pneumonia", confidence=0.8, uncertain=True,
                                               evidence=["Right basilar opacity"])],
                        unmapped_findings=[_FINDING], extraction=rules, mapping=rules,
                        objects_manifest=ObjectsManifest(key="manifests/S1/" + "d" * 64 + ".json", sha256="d" * 64,
                                                         count=2400)),
        VoteCast(study_id="S1", vote_id="v", assignment_id="a", reader_id="r", protocol=Protocol.CXR,
                 judgement=LabelVerdict(verdict=Verdict.DISAGREE, added_labels=["fracture"]), seconds_spent=3.5),
        VoteCast(study_id="S2", vote_id="v2", assignment_id="a2", reader_id="r", protocol=Protocol.LUMBAR,
                 judgement=GradeGrid(protocol=Protocol.LUMBAR,
                                     grades=[{"cell_id": "spinal_canal_stenosis_l4_l5", "grade": "Severe"}])),
    ]


def outcome(fn: Any) -> tuple[str, Any]:
    """("ok", the event) or ("error", its type and message): what a consumer would see."""
    try:
        return "ok", fn()
    except Exception as exc:  # noqa: BLE001 - the error itself is the outcome compared
        return "error", (type(exc), str(exc))


@pytest.mark.parametrize("event", current_events(), ids=lambda e: type(e).__name__)
def test_a_current_event_is_read_from_its_bytes_without_a_dict_of_the_message(event, monkeypatch):
    """The fast path: no json.loads of the message (it would fail here), the same event back."""
    body = event.model_dump_json().encode()

    def no_slow_path(_value: Any) -> Any:
        raise AssertionError("the message was parsed into a dict")

    monkeypatch.setattr(decoding_module.json, "loads", no_slow_path)
    decoded = decode_event(body, event.topic.value)
    assert decoded == event and type(decoded) is type(event)
    assert decoded.model_dump_json() == event.model_dump_json()


def _variants(event: Any) -> list[tuple[str, bytes]]:
    """The message as sent, and as it should never be read by the fast path alone."""
    raw = json.loads(event.model_dump_json())
    without_version = {k: v for k, v in raw.items() if k != "schema_version"}
    without_type = {k: v for k, v in raw.items() if k != "event_type"}
    older = {**raw, "schema_version": raw["schema_version"] - 1}
    oldest = {**raw, "schema_version": 1}
    as_string = {**raw, "schema_version": str(raw["schema_version"])}
    foreign = {**raw, "event_type": "Mystery"}
    extra = {**raw, "surprise": 1}
    # a duplicate key: the last one counts, in both readers
    duplicate = event.model_dump_json()[:-1] + ',"study_id":"S-other"}'
    return [
        ("as sent", event.model_dump_json().encode()),
        ("as text", event.model_dump_json()),
        ("indented", json.dumps(raw, indent=2).encode()),
        ("utf-16", json.dumps(raw).encode("utf-16")),
        ("no schema_version", json.dumps(without_version).encode()),
        ("no event_type", json.dumps(without_type).encode()),
        ("an older schema", json.dumps(older).encode()),
        ("schema 1", json.dumps(oldest).encode()),
        ("version as a string", json.dumps(as_string).encode()),
        ("another event type", json.dumps(foreign).encode()),
        ("an unknown field", json.dumps(extra).encode()),
        ("a duplicate key", duplicate.encode()),
        ("not JSON", b'{"event_type": "ReportIngested", '),
        ("a JSON array", b"[1, 2]"),
    ]


@pytest.mark.parametrize("event", current_events(), ids=lambda e: type(e).__name__)
def test_every_message_decodes_as_parse_event_reads_it_on_every_topic(event):
    """Whatever the bytes and whichever topic they came on (their own, another, none), the event
    or the error is parse_event's: the fast path changes the CPU, never the answer."""
    topics = [event.topic.value, Topic.VOTE_CAST.value, Topic.REPORT_INGESTED.value, "not-a-topic", None]
    for name, body in _variants(event):
        expected = outcome(lambda body=body: parse_event(json.loads(body)))
        for topic in topics:
            got = outcome(lambda body=body, topic=topic: decode_event(body, topic))
            assert got == expected, (name, topic)
            if got[0] == "ok":
                assert type(got[1]) is type(expected[1]), (name, topic)
                assert got[1].model_dump_json() == expected[1].model_dump_json(), (name, topic)


def test_a_message_of_an_older_schema_is_still_upcast():
    """A schema-2 report (its instance list inline, `objects`) on its own topic: the fast path
    does not take it (its shape is not today's), the upcaster reads it as it always has."""
    old = json.loads(current_events()[0].model_dump_json())
    old.pop("objects_manifest")
    old["objects"] = [_OBJECT.model_dump(mode="json")]
    old["schema_version"] = 2
    decoded = decode_event(json.dumps(old).encode(), Topic.REPORT_INGESTED.value)
    assert decoded.schema_version == 3 and decoded.objects_manifest.inline == [_OBJECT]


def test_each_topic_is_read_with_its_own_event_class():
    assert len(EVENT_BY_TOPIC) == len(EVENT_TYPES)
    for cls in EVENT_TYPES.values():
        assert EVENT_BY_TOPIC[cls.topic.value] is cls
