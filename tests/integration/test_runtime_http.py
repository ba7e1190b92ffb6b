"""The shared service runtime over HTTP, with a real database and broker: an event too large to
travel is the caller's clear 413 (and nothing is written); /healthz shows the consumer's state
and never a raw database error."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from services.common import outbox
from services.common.consumer import Handler
from services.common.db import unit_of_work
from services.common.runtime import create_app
from services.common.settings import ServiceSettings
from tests.integration.test_outbox_and_consumer import report

pytestmark = pytest.mark.integration


def app_with_route(dsn: str, bootstrap: str, topic: str, **settings_kw: Any) -> Any:
    router = APIRouter()

    @router.post("/reports/{size}")
    async def add(size: int) -> dict:
        async with unit_of_work(app.state.resources.pool) as conn:
            await outbox.record(conn, [report("HTTP", report_text="r" * size)])
        return {"recorded": True}

    async def apply(conn, event, prepared):
        return None

    settings = ServiceSettings(service_name="runtime-test", database_url=dsn, kafka_bootstrap=bootstrap,
                               kafka_session_timeout_ms=2000, kafka_heartbeat_interval_ms=300, **settings_kw)
    app = create_app(settings, lambda res: {topic: Handler(apply=apply)}, routers=[router])
    return app


def test_an_event_too_large_to_travel_is_a_413_problem_and_writes_nothing(infra, fresh_schema, fresh_topic):
    app = app_with_route(fresh_schema, infra["kafka"]["bootstrap"], fresh_topic)
    with TestClient(app) as client:
        refused = client.post(f"/reports/{outbox.MAX_EVENT_BYTES + 1}")
        accepted = client.post("/reports/100")
        health = client.get("/healthz").json()
    assert refused.status_code == 413
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "object store" in refused.json()["detail"]
    assert accepted.status_code == 200
    with psycopg.connect(fresh_schema) as conn:
        assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 1  # only the small one
    assert health["consumer"]["paused"] == [] and health["consumer"]["restarts"] == 0


def test_healthz_names_a_database_outage_without_its_raw_error(infra, fresh_schema, fresh_topic):
    app = app_with_route(fresh_schema, infra["kafka"]["bootstrap"], fresh_topic)
    with TestClient(app) as client:
        pool = app.state.resources.pool
        real = pool.connection

        def broken(*args: Any, **kwargs: Any):
            raise OSError("connection to server at \"10.0.0.7\", port 5432 failed: password authentication failed "
                          "for user \"radcurate_gateway\"")

        pool.connection = broken
        try:
            resp = client.get("/healthz")
        finally:
            pool.connection = real
    assert resp.status_code == 503
    body = resp.json()
    assert "database unreachable (OSError)" in body["problems"]
    assert "10.0.0.7" not in resp.text and "radcurate_gateway" not in resp.text


def test_metrics_answer_only_the_scrape_token_when_one_is_set(infra, fresh_schema, fresh_topic):
    app = app_with_route(fresh_schema, infra["kafka"]["bootstrap"], fresh_topic, metrics_token="scrape-secret")
    with TestClient(app) as client:
        anonymous = client.get("/metrics")
        reader = client.get("/metrics", headers={"Authorization": "Bearer rc_some_reader_token"})
        prometheus = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert anonymous.status_code == 401 and reader.status_code == 401
    assert anonymous.headers["content-type"].startswith("application/problem+json")
    assert prometheus.status_code == 200 and "radcurate_votes_total" in prometheus.text
    assert 'reader="' not in prometheus.text  # no reader ids, whoever scrapes
