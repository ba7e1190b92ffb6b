"""Alert rules and the Grafana dashboard use only the metrics the services export.

rules.yml is the single source of the alerts; alerts.yaml (the PrometheusRule CR) is rendered
from it by deploy/prometheus/render.py. promtool checks the rules when it is installed;
otherwise the YAML is parsed and the required fields are checked here.
"""

from __future__ import annotations

import json
import re
import runpy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "radcurate-dashboard.json"

# The metric names the services implement (services/common metrics helper), with their labels.
METRICS: dict[str, set[str]] = {
    "radcurate_events_consumed_total": {"service", "topic", "outcome"},
    "radcurate_events_published_total": {"service", "topic"},
    "radcurate_event_processing_seconds": {"service", "topic"},
    "radcurate_consumer_lag_messages": {"service", "topic"},
    "radcurate_outbox_backlog_events": {"service"},
    "radcurate_outbox_oldest_age_seconds": {"service"},
    "radcurate_dlq_events_total": {"service", "topic"},
    "radcurate_consumer_backoffs_total": {"service", "topic"},
    "radcurate_consumer_paused_partitions": {"service", "topic"},
    "radcurate_consumer_restarts_total": {"service"},
    "radcurate_outbox_parked_total": {"service", "topic"},
    "radcurate_outbox_parked_events": {"service"},
    "radcurate_llm_requests_total": {"service", "backend", "model", "outcome"},
    "radcurate_llm_request_seconds": {"service", "backend", "model"},
    "radcurate_llm_tokens_total": {"service", "backend", "model", "kind"},
    "radcurate_http_requests_total": {"service", "method", "route", "status"},
    "radcurate_http_request_seconds": {"service", "method", "route"},
    "radcurate_votes_total": {"verdict"},
    "radcurate_reads_total": set(),
    "radcurate_studies": {"state"},
    "radcurate_fleiss_kappa": {"label"},
    "radcurate_sampling_run_seconds": set(),
    "radcurate_selection_run_seconds": set(),
}
HISTOGRAMS = {name for name in METRICS
              if name.endswith("_seconds") and name not in {"radcurate_outbox_oldest_age_seconds"}}
REQUIRED_ALERTS = {
    "RadcurateConsumerLagGrowing": "radcurate_consumer_lag_messages",
    "RadcurateDeadLetters": "radcurate_dlq_events_total",
    "RadcurateOutboxStuck": "radcurate_outbox_oldest_age_seconds",
    "RadcurateOutboxParked": "radcurate_outbox_parked_events",
    "RadcurateConsumerWaitingOnDependency": "radcurate_consumer_paused_partitions",
    "RadcurateLLMErrorRate": "radcurate_llm_requests_total",
    "RadcurateGateway5xx": "radcurate_http_requests_total",
    "RadcurateNoVotesForAWorkingDay": "radcurate_votes_total",
}
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression, with histogram suffixes folded into the base name."""
    names = set()
    for name in re.findall(r"\bradcurate_[a-z_]+", expr):
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        names.add(base if base in HISTOGRAMS else name)
    return names


def assert_sane_promql(expr: str, where: str) -> None:
    """The checks possible without a PromQL parser: known metrics, balanced brackets, label use."""
    names = metric_names(expr)
    assert names, f"{where}: no radcurate metric in {expr!r}"
    unknown = names - set(METRICS)
    assert not unknown, f"{where}: unknown metrics {unknown}"
    for bucket in re.findall(r"\b(radcurate_[a-z_]+)_bucket\b", expr):
        assert bucket in HISTOGRAMS, f"{where}: {bucket} is not a histogram"
    for open_, close in ("()", "[]", "{}"):
        assert expr.count(open_) == expr.count(close), f"{where}: unbalanced {open_}{close}"
    for metric, matchers in re.findall(r"\b(radcurate_[a-z_]+)\{([^}]*)\}", expr):
        base = metric_names(metric).pop()
        for label in re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", matchers):
            assert label in METRICS[base], f"{where}: {base} has no label {label!r}"


def load_rules() -> dict[str, Any]:
    return yaml.safe_load((PROMETHEUS / "rules.yml").read_text())


def all_rules(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_rule_file_has_the_fields_prometheus_requires() -> None:
    doc = load_rules()
    assert set(doc) == {"groups"}
    group_names = [g["name"] for g in doc["groups"]]
    assert len(group_names) == len(set(group_names)), "group names must be unique"
    for group in doc["groups"]:
        assert group["rules"], group["name"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}, rule
            assert rule["alert"] and isinstance(rule["expr"], str)
            assert DURATION.match(str(rule.get("for", "0s"))), rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            assert_sane_promql(rule["expr"], rule["alert"])


def test_the_required_alerts_exist_and_watch_the_right_metric() -> None:
    rules = {r["alert"]: r for r in all_rules(load_rules())}
    for alert, metric in REQUIRED_ALERTS.items():
        assert alert in rules, f"missing alert {alert}"
        assert metric in metric_names(rules[alert]["expr"])


def test_prometheus_rule_resource_carries_exactly_the_rule_file_groups() -> None:
    render = runpy.run_path(str(PROMETHEUS / "render.py"))["render"]
    committed = yaml.safe_load((PROMETHEUS / "alerts.yaml").read_text())
    expected = yaml.safe_load(render((PROMETHEUS / "rules.yml").read_text()))
    assert committed == expected, "alerts.yaml is stale: run python deploy/prometheus/render.py"
    assert committed["apiVersion"] == "monitoring.coreos.com/v1"
    assert committed["kind"] == "PrometheusRule"
    assert committed["metadata"]["name"]
    assert committed["spec"]["groups"] == load_rules()["groups"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed; rules checked by parsing above")
def test_promtool_accepts_the_rule_file() -> None:
    out = subprocess.run(
        ["promtool", "check", "rules", str(PROMETHEUS / "rules.yml")],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_local_prometheus_scrapes_every_service_and_loads_the_alert_rules(tmp_path: Path) -> None:
    from radcurate.stack import prometheus

    state = {"services": {svc: {"port": 8000 + i} for i, svc in enumerate(("gateway", "extractor", "mapper"))}}
    cfg = prometheus.config(state)
    assert cfg["rule_files"] == [str(PROMETHEUS / "rules.yml")]
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in cfg["scrape_configs"]}
    assert jobs == {"extractor": ["127.0.0.1:8001"], "gateway": ["127.0.0.1:8000"], "mapper": ["127.0.0.1:8002"]}
    assert all(job["metrics_path"] == "/metrics" for job in cfg["scrape_configs"])
    if shutil.which("promtool"):  # also loads and checks the rule file it names
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(cfg))
        out = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True,
                             timeout=30, check=False)
        assert out.returncode == 0, out.stdout + out.stderr


# --- Grafana -----------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def test_dashboard_is_importable_grafana_json() -> None:
    dash = dashboard()
    assert dash["title"] and dash["uid"] and dash["schemaVersion"] >= 30
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]


def test_dashboard_covers_flow_llm_review_and_readers_with_known_metrics() -> None:
    dash = dashboard()
    rows = {p["title"] for p in dash["panels"] if p["type"] == "row"}
    assert {"Pipeline flow", "LLM health", "Review progress", "Reader activity"} <= rows
    used: set[str] = set()
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            assert_sane_promql(target["expr"].replace("$__rate_interval", "5m"), panel["title"])
            used |= metric_names(target["expr"])
    assert used == set(METRICS), f"metrics without a panel: {set(METRICS) - used}"
