"""Every JSON body the gateway accepts refuses unknown fields, so a client's misspelt field is a
422 naming it, never a silently dropped correction."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

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
    assert {"POST /api/v1/reviews/{assignment_id}/vote", "POST /api/v1/users"} <= {n for n, _ in _json_body_schemas(openapi)}


def test_every_json_request_body_and_what_it_nests_refuses_unknown_fields(openapi):
    lax = [f"{route}: {title}"
           for route, schema in _json_body_schemas(openapi)
           for title, obj in _objects_reachable(openapi, schema, set())
           if obj.get("additionalProperties") is not False]
    assert lax == []
