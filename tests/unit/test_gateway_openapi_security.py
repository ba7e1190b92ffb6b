"""/docs can authorise: the OpenAPI document declares the bearer scheme, every protected operation
names it, and a request without a token still gets the gateway's own problem+json 401."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.gateway.app import GatewaySettings, build_app


@pytest.fixture(scope="module")
def app():
    return build_app(GatewaySettings(database_url=SecretStr("postgresql://unused")))


def test_the_document_declares_a_bearer_scheme(app):
    scheme = app.openapi()["components"]["securitySchemes"]["bearer"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"


def test_every_api_operation_requires_the_bearer_scheme(app):
    ops = [(method.upper(), path, op) for path, item in app.openapi()["paths"].items() if path.startswith("/api/v1/")
           for method, op in item.items()]
    assert len(ops) > 20
    unprotected = [f"{m} {p}" for m, p, op in ops if {"bearer": []} not in op.get("security", [])]
    assert unprotected == []


@pytest.mark.parametrize("header", [None, "Basic dXNlcjpwdw==", "Bearer"])
def test_a_missing_or_malformed_token_is_a_problem_json_401(app, header):
    headers = {"Authorization": header} if header else {}
    resp = TestClient(app).get("/api/v1/me", headers=headers)
    assert resp.status_code == 401
    assert resp.headers["content-type"] == "application/problem+json"
    assert resp.headers["www-authenticate"] == "Bearer"
    assert "bearer token is required" in resp.json()["detail"]


def test_swagger_ui_is_served_from_the_gateway_not_a_cdn(app):
    client = TestClient(app)
    page = client.get("/docs")
    assert page.status_code == 200
    assert "/docs/assets/swagger-ui-bundle.js" in page.text and "cdn." not in page.text
    assert "persistAuthorization" not in page.text  # a token must not outlive the tab on a shared workstation
    bundle = client.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 100_000
