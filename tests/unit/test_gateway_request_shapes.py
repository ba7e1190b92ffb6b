"""Every JSON body the gateway accepts refuses unknown fields, so a client's misspelt field is a
422 naming it, never a silently dropped correction."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from services.common import protocols
from services.gateway.api.routes.reviews import VoteIn, unknown_fields
from services.gateway.app import GatewaySettings, build_app


@pytest.fixture(scope="module")
def openapi() -> dict:
    return build_app(GatewaySettings(database_url=SecretStr("postgresql://unused"))).openapi()


def _json_body_schemas(doc: dict) -> list[tuple[str, dict]]:
    bodies = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if schema:
                bodies.append((f"{method.upper()} {path}", schema))
    return bodies


def _resolve(doc: dict, schema: dict) -> dict:
    ref = schema.get("$ref")
    return doc["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else schema


def _objects_reachable(doc: dict, schema: dict, seen: set[str]) -> list[tuple[str, dict]]:
    """Every object schema a body can contain, followed through $ref, arrays, unions and maps."""
    found = []
    ref = schema.get("$ref")
    if ref:
        if ref in seen:
            return []
        seen.add(ref)
    s = _resolve(doc, schema)
    if s.get("type") == "object" and "properties" in s:
        found.append((s.get("title", ref or "?"), s))
    for sub in [*s.get("properties", {}).values(), *s.get("anyOf", []), *s.get("allOf", []), *s.get("oneOf", [])]:
        found += _objects_reachable(doc, sub, seen)
    for key in ("items", "additionalProperties"):
        if isinstance(s.get(key), dict):
            found += _objects_reachable(doc, s[key], seen)
    return found


def test_the_api_has_json_bodies_to_check(openapi):
    assert {"POST /api/v1/reviews/{assignment_id}/vote", "POST /api/v1/users"} <= {
        n for n, _ in _json_body_schemas(openapi)}


# The vote body is open on the wire because a plug-in protocol's judgement brings its own fields;
# the route refuses whatever neither the vote nor the study's protocol defines (`unknown_fields`).
CHECKED_BY_PROTOCOL = {"VoteIn"}


def test_every_json_request_body_and_what_it_nests_refuses_unknown_fields(openapi):
    lax = [f"{route}: {title}"
           for route, schema in _json_body_schemas(openapi)
           for title, obj in _objects_reachable(openapi, schema, set())
           if obj.get("additionalProperties") is not False and title not in CHECKED_BY_PROTOCOL]
    assert lax == []


@pytest.mark.parametrize(("protocol", "body", "unknown"), [
    ("cxr-label-verification", {"verdict": "agree_mostly", "added": ["pneumothorax"]}, ["added"]),
    ("cxr-label-verification", {"verdict": "disagree", "added_labels": ["pneumothorax"], "removed_labels": []}, []),
    ("cxr-label-verification", {"verdict": "agree_all", "grades": []}, ["grades"]),
    ("lumbar-grading", {"grades": [], "comment": "", "confirm": True}, []),
    ("lumbar-grading", {"grades": [], "verdict": "agree_all"}, ["verdict"]),
])
def test_a_vote_names_the_fields_its_protocol_does_not_define(protocol, body, unknown):
    assert unknown_fields(VoteIn.model_validate(body), protocols.get(protocol)) == unknown
