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
from services.gateway.api.routes import dead_letters, evaluations, reports, series
from services.gateway.auth import AuthenticateFirst, Role, token_hash
from services.gateway.handlers import build_handlers


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RADCURATE_GATEWAY_", extra="ignore")

    service_name: str = "gateway"
    # Bootstrap credential: an admin user with this token exists after start. No default.
    admin_token: SecretStr | None = None
    presigned_url_seconds: int = 300
    # Tokens the API issues expire after this long; a user renews theirs with POST /api/v1/me/token.
    token_lifetime_days: float = 90.0


async def _bootstrap_admin(res: Resources) -> None:
    token = getattr(res.settings, "admin_token", None)
    if token is None:
        return
    async with res.pool.connection() as conn:
        await conn.execute(
            "INSERT INTO users (user_id, display_name, role, token_sha256) VALUES ('admin', 'Administrator', %s, %s)"
            # A restart may rotate the token, never re-activate an admin an operator switched off.
            " ON CONFLICT (user_id) DO UPDATE SET token_sha256 = EXCLUDED.token_sha256",
            (Role.ADMIN.value, token_hash(token.get_secret_value())))
        await conn.commit()


def build_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    app = create_app(
        settings, build_handlers,
        routers=[users.router, studies.router, discussion.router, reviews.router, admin.router, oversight.router,
                 reports.router, evaluations.router, series.router, dead_letters.router],
        on_start=_bootstrap_admin,
        # Bodies are bounded before they are read: uploads where they are expected, 1 MiB elsewhere.
        body_limits={"/api/v1/studies": studies.MAX_UPLOAD_BYTES + 1024 * 1024,
                     "/api/v1/evaluations": evaluations.MAX_REQUEST_BYTES},
        title="RadCurate gateway",
        version="0.1.0",
        description="Reviewer and curator API of RadCurate. Errors are RFC 9457 problem+json.",
    )
    problems.install(app)
    app.add_middleware(AuthenticateFirst)  # outermost: no token, no body read
    _serve_page(app)
    return app


STATIC = Path(__file__).parent / "static"


def _serve_page(app: FastAPI) -> None:
    """The reviewer web page: plain files, no build step; the page itself needs no token."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
