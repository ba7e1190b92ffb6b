"""Gateway: the HTTP API for reviewer frontends and curators, and the owner of studies and votes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from services.common import catalogue, protocols
from services.common.runtime import Resources, create_app
from services.common.settings import ServiceSettings
from services.gateway import problems
from services.gateway.api import hot_routes
from services.gateway.api.routes import (
    admin,
    dead_letters,
    discussion,
    evaluations,
    manifests,
    oversight,
    pacs_imports,
    releases,
    reports,
    reviews,
    series,
    studies,
    users,
)
from services.gateway.auth import AuthenticateFirst, Role, token_hash
from services.gateway.handlers import build_handlers, prepare_open_reads
from services.gateway.ingest import IngestLimits
from services.gateway.repo import users as users_repo

log = logging.getLogger(__name__)


class GatewaySettings(ServiceSettings, IngestLimits):
    """IngestLimits adds max_object_bytes, max_pixels and verify_decode (the ingest bounds)."""

    model_config = SettingsConfigDict(env_prefix="RADCURATE_GATEWAY_", extra="ignore")

    service_name: str = "gateway"
    # Bootstrap credential: an admin user with this token exists after start. No default.
    admin_token: SecretStr | None = None
    presigned_url_seconds: int = 300
    # PACSes (DICOMweb roots) curators may import from through the API; none by default, since the
    # gateway fetches whatever URL it is given. A JSON list in RADCURATE_GATEWAY_DICOMWEB_URLS.
    dicomweb_urls: list[str] = []
    # Tokens the API issues expire after this long; a user renews theirs with POST /api/v1/me/token.
    token_lifetime_days: float = 90.0
    # Display-ready derivatives, made when a study is assigned for review: the JPEG sizes the
    # reviewer page asks for (besides a native-size PNG and a 16-bit master), and how many objects
    # are decoded at once in the background.
    derivative_sizes: tuple[int, ...] = (1024, 2048)
    derivative_workers: int = 2


async def _start(res: Resources[GatewaySettings]) -> None:
    load_protocols()
    await _bootstrap_admin(res)
    await prepare_open_reads(res)


async def _stop(res: Resources[GatewaySettings]) -> None:
    listener = res.extra.get(releases.RELEASE_LISTENER)  # made on the first `?wait=`
    if listener is not None:
        await listener.close()


def load_protocols() -> list[str]:
    """Import every curation protocol and build what its review view reads (e.g. the CXR
    taxonomy's labels), before the gateway serves; returns their names.

    `protocols.get` imports a protocol on its first use, and its review view loads the taxonomy on
    its first call: ~80 ms of CPU for the CXR protocol, ~30 ms for lumbar
    (bench_gateway_load.py BENCH_FIRST_PROBE: the process's first `GET /next` cost 90 ms of gateway
    CPU, a reader's first 0.8 ms). Paid by the first reader's request, it held up every request
    that arrived meanwhile: the paced `next` p99 sat in the phase's first second. A protocol whose
    view cannot be built without a study is left to build it on its first read, as before."""
    loaded = protocols.names()
    for name in loaded:
        protocol = protocols.get(name)
        try:
            protocol.review_view([], "/api/v1/studies/-")
        except Exception:  # noqa: BLE001 - a plug-in's view may need a real suggestion: built on first read
            log.debug("protocol %s: review view left to its first read", name, exc_info=True)
    return loaded


async def _bootstrap_admin(res: Resources[GatewaySettings]) -> None:
    token = res.settings.admin_token
    if token is None:
        return
    async with res.pool.connection() as conn:
        await users_repo.bootstrap_admin(conn, Role.ADMIN.value, token_hash(token.get_secret_value()))
        await conn.commit()


def build_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    app = create_app(
        settings, build_handlers,
        routers=[users.router, studies.router, discussion.router, reviews.router, admin.router, oversight.router,
                 reports.router, evaluations.router, series.router, releases.router, pacs_imports.router,
                 dead_letters.router, manifests.router],
        on_start=_start,
        on_stop=_stop,
        # Bodies are bounded before they are read: uploads where they are expected, 1 MiB elsewhere.
        body_limits={"/api/v1/studies": studies.MAX_UPLOAD_BYTES + 1024 * 1024,
                     "/api/v1/studies/batch": studies.MAX_UPLOAD_BYTES + 1024 * 1024,
                     "/api/v1/evaluations": evaluations.MAX_REQUEST_BYTES},
        title="RadCurate gateway",
        version="0.1.0",
        description="Reviewer and curator API of RadCurate. Errors are RFC 9457 problem+json. "
                    "Authorise with a user's bearer token (the padlock / Authorize button).",
        docs_url=None, redoc_url=None,  # served by _serve_docs, from local files
    )
    problems.install(app)
    app.add_middleware(AuthenticateFirst)  # no token, no body read
    # Outermost: the reader's two calls per study, served inline (hot_routes.py); the rest passes on.
    app.add_middleware(hot_routes.HotPath, service=settings.service_name)
    _serve_page(app)
    _serve_docs(app)
    _serve_event_catalogue(app)
    return app


STATIC = Path(__file__).parent / "static"


def _serve_page(app: FastAPI) -> None:
    """The reviewer web page: plain files, no build step; the page itself needs no token."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/console", include_in_schema=False)
    async def console() -> FileResponse:
        """The curator console (the API still checks the role on every call)."""
        return FileResponse(STATIC / "console.html", headers={"Cache-Control": "no-cache"})

    @app.get("/evaluate", include_in_schema=False)
    async def evaluate_page() -> FileResponse:
        """The evaluator page: releases open for evaluation, validate, submit, results."""
        return FileResponse(STATIC / "evaluate.html", headers={"Cache-Control": "no-cache"})


def _serve_docs(app: FastAPI) -> None:
    """Swagger UI at /docs from the installed swagger-ui bundle rather than FastAPI's CDN default,
    so it works on a hospital network without internet. Its start-up script is a file of ours, not
    inline, so the page keeps the gateway's Content-Security-Policy (script-src 'self'). The token
    entered under Authorize is not persisted (no persistAuthorization: it would sit in
    localStorage on a shared workstation)."""
    import swagger_ui_bundle

    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger-ui")
    page = ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{app.title} — API</title><link rel=\"stylesheet\" href=\"/docs/assets/swagger-ui.css\">"
            "<link rel=\"icon\" href=\"/docs/assets/favicon-32x32.png\"></head><body><div id=\"swagger-ui\"></div>"
            "<script src=\"/docs/assets/swagger-ui-bundle.js\"></script><script src=\"/docs/init.js\"></script>"
            "</body></html>")
    init = (f"window.ui = SwaggerUIBundle({{url: {json.dumps(app.openapi_url)}, dom_id: '#swagger-ui',"
            " layout: 'BaseLayout', presets: [SwaggerUIBundle.presets.apis], displayRequestDuration: true});")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/docs/init.js", include_in_schema=False)
    async def docs_init() -> Response:
        return Response(init, media_type="text/javascript")


def _serve_event_catalogue(app: FastAPI) -> None:
    """The AsyncAPI 3 document of every topic, next to /openapi.json: platform teams read it to
    provision topics and ACLs. Built once from the event catalogue, the source the topic list,
    the KafkaTopic manifests and docs/asyncapi.json are generated from."""
    document = catalogue.asyncapi()

    @app.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi() -> JSONResponse:
        return JSONResponse(document)
