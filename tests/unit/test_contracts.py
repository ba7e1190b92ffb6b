"""Event contracts: envelope, decoding, upcasting, immutability."""

from __future__ import annotations

import pydantic
import pytest

from services.common import contracts
from services.common.contracts import (
    ObjectsManifest,
    Protocol,
    ReportIngested,
    Topic,
    UnknownEvent,
    Verdict,
    VoteCast,
    parse_event,
)
from services.common.protocols.cxr.judgement import LabelVerdict
from services.common.protocols.lumbar.judgement import GradeGrid


def a_report(**kw) -> ReportIngested:
    return ReportIngested(study_id="S1", patient_id="P1", study_instance_uid="1.2.3", report_text="Normal.",
                          objects_manifest=ObjectsManifest(), **{"protocol": Protocol.CXR, **kw})


def test_every_event_carries_the_envelope_and_is_keyed_by_study():
    e = a_report()
    assert e.event_id and e.correlation_id and e.occurred_at.tzinfo is not None
    assert (e.event_type, e.schema_version, e.key()) == ("ReportIngested", 3, b"S1")
    assert e.topic is Topic.REPORT_INGESTED and Topic.REPORT_INGESTED.dlq == "report-ingested.dlq"


def test_a_message_decodes_back_into_the_same_event():
    e = a_report()
    assert parse_event(e.model_dump(mode="json")) == e


def test_events_are_frozen_and_reject_unknown_fields():
    e = a_report()
    with pytest.raises(pydantic.ValidationError):
        e.study_id = "other"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        ReportIngested.model_validate({**e.model_dump(mode="json"), "surprise": 1})


def test_an_unknown_event_type_is_refused_by_name():
    with pytest.raises(UnknownEvent, match="'Mystery'"):
        parse_event({"event_type": "Mystery"})


def test_old_schema_versions_are_upcast_before_validation(monkeypatch):
    """A v0 VoteCast called the verdict `answer`; v1 carried it in flat fields with no protocol
    (then always CXR); readers of today still understand both, upcaster after upcaster."""
    def v0_to_v1(raw: dict) -> dict:
        raw = dict(raw)
        raw["verdict"] = raw.pop("answer")
        raw["schema_version"] = 1
        return raw

    monkeypatch.setitem(contracts.UPCASTERS, ("VoteCast", 0), v0_to_v1)
    current = VoteCast(study_id="S1", vote_id="v", assignment_id="a", reader_id="r", protocol=Protocol.CXR,
                       judgement=LabelVerdict(verdict=Verdict.DISAGREE, added_labels=["fracture"]))
    old = current.model_dump(mode="json")
    old.pop("protocol")
    old.update(old.pop("judgement"))
    old.pop("protocol")
    old["answer"] = old.pop("verdict")
    old["schema_version"] = 0
    assert parse_event(old) == current


def test_a_schema_1_lumbar_vote_reads_as_a_grade_grid_judgement():
    grades = [{"cell_id": "spinal_canal_stenosis_l4_l5", "grade": "Severe", "point": None}]
    old = {"event_type": "VoteCast", "schema_version": 1, "study_id": "S1", "vote_id": "v", "assignment_id": "a",
           "reader_id": "r", "protocol": "lumbar-grading", "verdict": None, "added_labels": [], "removed_labels": [],
           "grades": grades}
    vote = parse_event(old)
    assert isinstance(vote.judgement, GradeGrid) and vote.judgement.grades[0].grade == "Severe"
    assert parse_event(vote.model_dump(mode="json")) == vote


def test_a_schema_1_event_without_a_protocol_was_a_cxr_one_and_a_new_one_must_name_it():
    old = a_report().model_dump(mode="json")
    old.pop("protocol")
    old["schema_version"] = 1
    assert parse_event(old).protocol == Protocol.CXR
    with pytest.raises(pydantic.ValidationError, match="protocol"):
        ReportIngested.model_validate({**old, "schema_version": 2})


def test_an_unknown_protocol_is_refused_by_name_not_read_as_cxr():
    with pytest.raises(pydantic.ValidationError, match="unknown protocol 'cxr-typo'"):
        a_report(protocol="cxr-typo")


def test_a_vote_judgement_is_the_one_its_protocol_defines():
    vote = dict(study_id="S1", vote_id="v", assignment_id="a", reader_id="r")
    with pytest.raises(pydantic.ValidationError, match="carries a cxr-label-verification judgement"):
        VoteCast(protocol=Protocol.LUMBAR, judgement=LabelVerdict(verdict=Verdict.AGREE_ALL), **vote)
    with pytest.raises(pydantic.ValidationError, match="verdict"):  # tagged CXR, so validated as a verdict
        VoteCast(protocol=Protocol.CXR, judgement={"protocol": Protocol.CXR, "grades": []}, **vote)
