"""`radcurate up --with-prometheus`: a real Prometheus scrapes every service while a small funnel
runs, sees the pipeline metrics, and loads and evaluates every alert rule of deploy/prometheus."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from radcurate.client import Gateway
from radcurate.demo import ingest_folder
from radcurate.stack import local
from radcurate.stack.procs import alive
from radcurate.synth import synth_cxr

pytestmark = pytest.mark.integration
STUDIES = 30
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"
PIPELINE = {  # topic -> (the service that publishes it, the services that consume it)
    "report-ingested": ("gateway", {"extractor"}),
    "findings-extracted": ("extractor", {"mapper"}),
    "labels-suggested": ("mapper", {"sampler", "gateway"}),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    state_dir = tmp_path_factory.mktemp("prom-stack")
    state = local.up(state_dir, with_prometheus=True)
    yield state
    stopped = local.down(state_dir)
    assert "prometheus" in stopped and not alive(state["prometheus"]["pid"])
    assert "prometheus" not in local.load(state_dir)


@pytest.fixture(scope="module")
def prom(stack: dict) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack["prometheus"]["url"], timeout=10) as client:
        yield client


def query(prom: httpx.Client, expr: str) -> list[dict[str, Any]]:
    """An instant query; fails the test if Prometheus cannot evaluate it."""
    body = prom.get("/api/v1/query", params={"query": expr}).json()
    assert body["status"] == "success", f"{expr!r}: {body.get('error')}"
    return body["data"]["result"]


def by_label(prom: httpx.Client, expr: str, label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in query(prom, expr)}


def eventually(check: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            assert result, f"timed out waiting for {what}"
            return result
        time.sleep(0.5)


async def test_a_small_funnel_shows_up_in_prometheus(stack: dict, prom: httpx.Client, tmp_path: Path) -> None:
    assert local.health(stack)["prometheus"] == "healthy"

    def scraped_jobs() -> set[str]:
        targets = prom.get("/api/v1/targets").json()["data"]["activeTargets"]
        return {t["labels"]["job"] for t in targets if t["health"] == "up"}

    eventually(lambda: scraped_jobs() == set(local.SERVICES), "every service to be scraped", timeout=20)

    synth_cxr(STUDIES, 7, tmp_path / "synth")
    summary = await ingest_folder(stack, tmp_path / "synth")
    assert (summary.ingested, summary.rejected) == (STUDIES, [])
    api = Gateway(stack["gateway_url"], stack["admin_token"])
    try:
        deadline = time.monotonic() + 60
        while (await api.progress())["funnel"]["suggested"] < STUDIES:
            assert time.monotonic() < deadline, "timed out waiting for suggestions"
            await asyncio.sleep(0.5)
    finally:
        await api.aclose()

    def pipeline_scraped() -> bool:
        published = by_label(prom, "sum by (topic) (radcurate_events_published_total)", "topic")
        applied = query(prom, 'sum by (service, topic) (radcurate_events_consumed_total{outcome="applied"})')
        consumed = {(r["metric"]["service"], r["metric"]["topic"]): float(r["value"][1]) for r in applied}
        return all(published.get(topic, 0) >= STUDIES
                   and all(consumed.get((svc, topic), 0) >= STUDIES for svc in consumers)
                   for topic, (_, consumers) in PIPELINE.items())

    await asyncio.to_thread(eventually, pipeline_scraped, "events published and consumed per topic")

    published_by = query(prom, "sum by (service, topic) (radcurate_events_published_total)")
    assert {(t, p) for t, (p, _) in PIPELINE.items()} <= {
        (r["metric"]["topic"], r["metric"]["service"]) for r in published_by}
    processed = by_label(prom, "sum by (topic) (radcurate_event_processing_seconds_count)", "topic")
    assert all(processed.get(topic, 0) >= STUDIES for topic in PIPELINE)
    lag = query(prom, "max by (service, topic) (radcurate_consumer_lag_messages)")
    assert {r["metric"]["service"] for r in lag} >= {"extractor", "mapper", "sampler"}
    await asyncio.to_thread(
        eventually,
        lambda: by_label(prom, "max by (service) (radcurate_outbox_backlog_events)", "service")
        == dict.fromkeys(local.SERVICES, 0.0),
        "every service's outbox backlog to be scraped as drained")
    progress_ok = query(prom, 'sum(radcurate_http_requests_total{service="gateway",route="/api/v1/progress",'
                              'method="GET",status="200"})')
    assert progress_ok and float(progress_ok[0]["value"][1]) >= 1
    assert query(prom, 'radcurate_http_request_seconds_count{service="gateway"}')


def test_every_alert_rule_is_loaded_healthy_and_evaluates(stack: dict, prom: httpx.Client) -> None:
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]

    def loaded() -> dict[str, dict]:
        groups = prom.get("/api/v1/rules").json()["data"]["groups"]
        found = {r["name"]: r for g in groups for r in g["rules"]}
        return found if found and all(r["health"] == "ok" for r in found.values()) else {}

    found = eventually(loaded, "every rule evaluated with health ok", timeout=30)
    assert set(found) == {r["alert"] for r in rules}
    for rule in rules:
        firing = query(prom, rule["expr"])  # evaluates without error, or query() fails
        assert firing == [], f"{rule['alert']} fires on a healthy pipeline: {firing}"
        assert found[rule["alert"]].get("lastError", "") == ""
