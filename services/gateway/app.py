"""Gateway: the HTTP API for reviewer frontends and curators, and the owner of studies and votes."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from services.common.runtime import Resources, create_app
from services.common.settings import ServiceSettings
from services.gateway import problems
from services.gateway.api.routes import admin, discussion, oversight, reviews, studies, users
from services.gateway.api.routes import evaluations, reports, series
from services.gateway.auth import Role, token_hash
from services.gateway.handlers import build_handlers, prepare_open_reads
from services.gateway.ingest import IngestLimits


class GatewaySettings(ServiceSettings, IngestLimits):
    """IngestLimits adds max_object_bytes, max_pixels and verify_decode (the ingest bounds)."""

    model_config = SettingsConfigDict(env_prefix="RADCURATE_GATEWAY_", extra="ignore")

    service_name: str = "gateway"
    # Bootstrap credential: an admin user with this token exists after start. No default.
    admin_token: SecretStr | None = None
    presigned_url_seconds: int = 300
    # Display-ready derivatives, made when a study is assigned for review: the JPEG sizes the
    # reviewer page asks for (besides a native-size PNG and a 16-bit master), and how many objects
    # are decoded at once in the background.
    derivative_sizes: tuple[int, ...] = (1024, 2048)
    derivative_workers: int = 2


async def _start(res: Resources) -> None:
    await _bootstrap_admin(res)
    await prepare_open_reads(res)


async def _bootstrap_admin(res: Resources) -> None:
    token = getattr(res.settings, "admin_token", None)
    if token is None:
        return
    async with res.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO users (user_id, display_name, role, token_sha256) VALUES ('admin', 'Administrator', %s, %s)"
            " ON CONFLICT (user_id) DO UPDATE SET token_sha256 = EXCLUDED.token_sha256, active = true",
            (Role.ADMIN.value, token_hash(token.get_secret_value())))
        await conn.commit()


def build_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    app = create_app(
        settings, build_handlers,
        routers=[users.router, studies.router, discussion.router, reviews.router, admin.router, oversight.router,
                 reports.router, evaluations.router, series.router],
        on_start=_start,
        title="RadCurate gateway",
        version="0.1.0",
        description="Reviewer and curator API of RadCurate. Errors are RFC 9457 problem+json.",
    )
    problems.install(app)
    _serve_page(app)
    return app


STATIC = Path(__file__).parent / "static"


def _serve_page(app: FastAPI) -> None:
    """The reviewer web page: plain files, no build step; the page itself needs no token."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
