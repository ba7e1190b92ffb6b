"""The sampler reports a run it cannot do back to the curator instead of only dead-lettering it."""

from __future__ import annotations

from services.common.contracts import Protocol, SamplingPlan, SamplingRequested, parse_event
from services.sampler.handlers import _failed


def test_a_run_that_cannot_be_done_is_reported_as_a_failed_sampling_completed():
    cmd = SamplingRequested(study_id="run-1", run_id="run-1", protocol=Protocol.CXR,
                            plan=SamplingPlan(lease_seconds=5), panel=["a"],
                            capacity={"a": 2}, exclusions={"a": ["S1"]})
    event = _failed(cmd, "the panel is too small")
    assert event.status == "failed" and "panel is too small" in event.error
    assert event.correlation_id == cmd.correlation_id and event.study_id == "run-1"
    assert parse_event(event.model_dump(mode="json")) == event


def test_old_sampling_requests_without_capacity_or_lease_still_parse():
    raw = SamplingRequested(study_id="r", run_id="r", protocol=Protocol.CXR, plan=SamplingPlan(),
                            panel=["a"]).model_dump(mode="json")
    for key in ("capacity", "exclusions"):
        raw.pop(key)
    raw["plan"].pop("lease_seconds")
    cmd = parse_event(raw)
    assert cmd.capacity == {} and cmd.plan.lease_seconds is None
