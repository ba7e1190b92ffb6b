"""Event contracts: envelope, decoding, upcasting, immutability."""

from __future__ import annotations

import pydantic
import pytest

from services.common import contracts
from services.common.contracts import ReportIngested, Topic, UnknownEvent, VoteCast, Verdict, parse_event


def a_report(**kw) -> ReportIngested:
    return ReportIngested(study_id="S1", patient_id="P1", study_instance_uid="1.2.3", report_text="Normal.",
                          objects=[], **kw)


def test_every_event_carries_the_envelope_and_is_keyed_by_study():
    e = a_report()
    assert e.event_id and e.correlation_id and e.occurred_at.tzinfo is not None
    assert (e.event_type, e.schema_version, e.key()) == ("ReportIngested", 1, b"S1")
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
    """A v0 VoteCast called the verdict `answer`; readers of today still understand it."""
    def v0_to_v1(raw: dict) -> dict:
        raw = dict(raw)
        raw["verdict"] = raw.pop("answer")
        raw["schema_version"] = 1
        return raw

    monkeypatch.setitem(contracts.UPCASTERS, ("VoteCast", 0), v0_to_v1)
    current = VoteCast(study_id="S1", vote_id="v", assignment_id="a", reader_id="r", verdict=Verdict.DISAGREE)
    old = current.model_dump(mode="json")
    old["answer"] = old.pop("verdict")
    old["schema_version"] = 0
    assert parse_event(old) == current
