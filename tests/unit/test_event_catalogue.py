"""The event catalogue is the one source of the topic list, and it agrees with the code: what
each service subscribes to, what it constructs, and the generated manifests and AsyncAPI file."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from services.common import catalogue, contracts
from services.common.catalogue import CATALOGUE, SERVICES
from services.common.kafka import ALL_TOPICS
from services.common.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]


def test_every_event_type_and_topic_has_exactly_one_channel():
    assert sorted(ch.event.__name__ for ch in CATALOGUE) == sorted(c.__name__ for c in contracts.EVENT_TYPES.values())
    assert sorted(ch.topic for ch in CATALOGUE) == sorted(t.value for t in contracts.Topic)


def test_the_local_stack_creates_every_catalogued_topic_and_its_dead_letter_topic():
    assert set(ALL_TOPICS) == {ch.topic for ch in CATALOGUE} | {f"{ch.topic}.dlq" for ch in CATALOGUE}


def _settings_of(service: str):
    module = importlib.import_module(f"services.{service}.app")
    # the service's own settings (a ServiceSettings), not e.g. the extractor's LLM-only settings
    cls = next(v for k, v in vars(module).items() if k.endswith("Settings") and isinstance(v, type)
               and v.__module__ == module.__name__ and issubclass(v, ServiceSettings))
    return cls(database_url="postgresql://unused")


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_consumes_exactly_the_topics_the_catalogue_lists_for_it(service):
    handlers = importlib.import_module(f"services.{service}.handlers").build_handlers(
        SimpleNamespace(settings=_settings_of(service), extra={}, store=None))
    assert set(handlers) == catalogue.consumed_by(service)


def _constructed_in(service: str) -> set[str]:
    source = "\n".join(p.read_text() for p in (ROOT / "services" / service).rglob("*.py"))
    return {name for name in contracts.EVENT_TYPES if re.search(rf"\b{name}\(", source)}


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_constructs_exactly_the_events_the_catalogue_says_it_produces(service):
    assert _constructed_in(service) == {e.__name__ for e in catalogue.produced_by(service)}


def test_generated_files_are_up_to_date():
    """Stale? Run `python -m services.common.catalogue --write` and commit the result."""
    assert catalogue.stale() == []


def test_the_strimzi_manifests_provision_every_topic_the_services_use():
    manifest = ROOT / "deploy/k8s/components/strimzi-kafka/topics.yaml"
    provisioned = {d["spec"]["topicName"] for d in yaml.safe_load_all(manifest.read_text())}
    assert provisioned == set(ALL_TOPICS)


def _refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def test_every_reference_in_the_asyncapi_document_resolves():
    doc = catalogue.asyncapi()
    for ref in set(_refs(doc)):
        node = doc
        for part in ref.removeprefix("#/").split("/"):
            assert part in node, ref
            node = node[part]
    assert doc["asyncapi"] == "3.0.0"
    assert {op["action"] for op in doc["operations"].values()} == {"send", "receive"}


def test_the_asyncapi_document_names_producer_and_consumers_of_a_vote():
    ops = catalogue.asyncapi()["operations"]
    assert "gateway.send.vote-cast" in ops
    assert {"sampler.receive.vote-cast", "consensus.receive.vote-cast"} <= set(ops)
    assert "consensus.send.vote-cast.dlq" in ops


def test_the_gateway_serves_the_asyncapi_document_next_to_openapi():
    from fastapi.testclient import TestClient

    from services.gateway.app import GatewaySettings, build_app

    client = TestClient(build_app(GatewaySettings(database_url="postgresql://unused")))  # no lifespan: no stack
    resp = client.get("/asyncapi.json")
    assert resp.status_code == 200
    assert resp.json() == json.loads(catalogue.asyncapi_json())
    assert set(resp.json()["channels"]) == set(ALL_TOPICS)
