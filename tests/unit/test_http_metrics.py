"""HTTP metrics are labelled by route template (bounded) and count crashes as 500s."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.common import metrics
from services.common.runtime import HttpMetrics


def sample(route: str, status: str) -> float:
    value = metrics.HTTP_REQUESTS.labels("unit-test", "GET", route, status)._value.get()
    return float(value)


def test_requests_are_counted_per_route_template_and_crashes_as_500():
    app = FastAPI()

    @app.get("/studies/{study_id}")
    async def ok(study_id: str) -> dict:
        return {"study_id": study_id}

    @app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("crash")

    app.add_middleware(HttpMetrics, service="unit-test")
    client = TestClient(app, raise_server_exceptions=False)
    before_ok, before_boom = sample("/studies/{study_id}", "200"), sample("/boom", "500")
    assert client.get("/studies/S1").status_code == 200
    assert client.get("/studies/S2").status_code == 200
    assert client.get("/boom").status_code == 500
    assert sample("/studies/{study_id}", "200") == before_ok + 2  # one series, not one per study
    assert sample("/boom", "500") == before_boom + 1


def test_a_metric_child_is_looked_up_once_and_counts_in_the_registry():
    """metrics.child() keeps each label set's child: the same object every call (no labels() on
    the hot path), and what it counts is what the registry exports."""
    from prometheus_client import REGISTRY

    def exported() -> float:
        return REGISTRY.get_sample_value("radcurate_votes_total", {"verdict": "unit-test-child"}) or 0.0

    before = exported()
    first = metrics.child(metrics.VOTES, "unit-test-child")
    assert metrics.child(metrics.VOTES, "unit-test-child") is first
    assert first is metrics.VOTES.labels("unit-test-child")  # the child prometheus_client exports
    first.inc()
    metrics.child(metrics.VOTES, "unit-test-child").inc(2)
    assert exported() == before + 3
