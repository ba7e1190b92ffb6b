"""The services' apps leave FastAPI's native OpenTelemetry off: no provider look-up per request."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from opentelemetry import _logs, metrics, trace
from pydantic import SecretStr

from services.common.runtime import create_app
from services.common.settings import ServiceSettings


def test_a_request_asks_opentelemetry_for_no_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    """Left on, FastAPI asks for the global tracer, meter and logger providers on every request
    (each ask reads os.environ) only to find none configured."""
    asked: list[str] = []
    for module, name in ((trace, "get_tracer_provider"), (metrics, "get_meter_provider"),
                         (_logs, "get_logger_provider")):
        original = getattr(module, name)

        def counted(*args: object, _name: str = name, _original=original, **kwargs: object) -> object:
            asked.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    app = create_app(ServiceSettings(database_url=SecretStr("postgresql://unused")))

    @app.get("/probe")
    async def probe() -> dict:
        return {"ok": True}

    client = TestClient(app)  # no lifespan: nothing but the request path runs
    assert client.get("/probe").json() == {"ok": True}
    assert client.get("/no-such-route").status_code == 404
    assert asked == []
