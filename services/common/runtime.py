"""What every service process is: an HTTP app (health, metrics, maybe an API) whose lifespan
opens the pool, the producer, the outbox relay and the event consumer, and closes them again.

A service provides its settings, a function that builds its topic handlers from the opened
resources, and optionally API routers. Everything else — health, metrics, relay, consumer — is
the same in all five services and lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import AsyncConnectionPool

from services.common import metrics
from services.common.bodylimit import DEFAULT_BODY_LIMIT, BodyLimit
from services.common.consumer import EventConsumer, Handler
from services.common.db import open_pool
from services.common.kafka import KafkaConnection, make_producer, stop_producer
from services.common.objectstore import ObjectStore
from services.common.outbox import EventTooLarge, OutboxRelay
from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)

# Exit status of a process whose consumer or relay died: non-zero so that the supervisor (the
# local stack's `up`, Kubernetes) restarts it, instead of a live process with a dead consumer.
EXIT_TASK_DIED = 70
_fatal: list[str] = []  # why this process is ending, read by serve() after uvicorn returns
_server: list[uvicorn.Server] = []  # the server serve() runs, asked to stop when an essential task dies


# The service's own settings class, so `res.settings.<name>` is checked by mypy where it is read
# (a bare `Resources` leaves it unchecked: Resources[Any]).
SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


@dataclass
class Resources(Generic[SettingsT]):
    """Opened once per process in the lifespan; handed to handlers and routes. A service annotates
    with its settings class, e.g. `Resources[SamplerSettings]`."""

    settings: SettingsT
    pool: AsyncConnectionPool
    producer: AIOKafkaProducer
    relay: OutboxRelay
    store: ObjectStore
    consumer: EventConsumer | None = None
    tasks: list[asyncio.Task] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


HandlersFactory = Callable[[Resources[SettingsT]], Mapping[str, Handler]]
Hook = Callable[[Resources[SettingsT]], Any]


# FastAPI's native OpenTelemetry bridge, off: the services export Prometheus metrics
# (HttpMetrics, /metrics) and configure no OpenTelemetry provider. Left on, FastAPI asks
# OpenTelemetry for its global tracer, meter and logger providers on every request to learn that
# none is configured, and each of those asks reads os.environ (~2% of the gateway's event loop).
TELEMETRY_OFF: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_app(settings: SettingsT, handlers: HandlersFactory[SettingsT] | None = None, *,
               routers: Sequence[APIRouter] = (), on_start: Hook[SettingsT] | None = None,
               on_stop: Hook[SettingsT] | None = None, observe: Hook[SettingsT] | None = None,
               body_limits: Mapping[str, int] | None = None, default_body_limit: int = DEFAULT_BODY_LIMIT,
               **fastapi_kwargs: Any) -> FastAPI:
    """Build the service's FastAPI app with health, metrics and the event machinery.

    `observe` (optional) is called every few seconds to refresh gauges read from the service's
    own tables (e.g. studies per state, agreement per label); its failures are logged, not fatal.
    Request bodies are bounded before they are read: `body_limits` per exact path (uploads), else
    `default_body_limit`.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        res = await _open(settings, handlers, observe)
        app.state.resources = res
        if on_start:
            await _maybe_await(on_start(res))
        freeze_startup_heap()
        try:
            yield
        finally:
            gc.unfreeze()  # a process that starts the app again (tests) gets these objects back
            if on_stop:
                await _maybe_await(on_stop(res))
            await _close(res)

    # No Swagger UI or ReDoc: FastAPI serves them with scripts from a CDN, which would run on the
    # API's origin. The OpenAPI document stays at /openapi.json for tools. FastAPI's native
    # OpenTelemetry is off (TELEMETRY_OFF).
    fastapi_kwargs = {"docs_url": None, "redoc_url": None, "telemetry": TELEMETRY_OFF, **fastapi_kwargs}
    app = FastAPI(lifespan=lifespan, **fastapi_kwargs)
    app.add_exception_handler(EventTooLarge, _event_too_large)
    app.add_api_route("/healthz", _healthz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/metrics", _metrics, methods=["GET"], include_in_schema=False)
    for router in routers:
        app.include_router(router)
    _add_http_metrics(app, settings.service_name)
    app.add_middleware(BodyLimit, limits=body_limits, default=default_body_limit)
    app.add_middleware(SecurityHeaders)
    return app


def freeze_startup_heap() -> None:
    """Move everything alive after start-up out of the cyclic garbage collector's sight.

    Why: a service holds ~150,000 long-lived objects once started (modules, classes, pydantic and
    openai schemas, the app), and every full collection walks them all. The LLM path allocates
    enough container objects per call to trigger one every few hundred calls: at 128 calls in
    flight those pauses were ~30% of the client's CPU (bench/bench_llm.py: 0.81 -> 0.56 ms of
    client CPU per call frozen). Frozen objects are still freed by reference counting; only cycles
    among them are never collected, so the garbage is collected first and start-up's objects,
    which live as long as the process, are what gets frozen.

    The youngest generation is collected every 10,000 net allocations instead of every 700: a call
    in flight holds a few hundred container objects, so at 128 in flight the default collected
    hundreds of times per 1,000 calls, each time also aging the in-flight objects into the older
    generations that are walked again later. Measured on the LLM bench (C = 128, 2,000 calls), the
    collector's own CPU fell from ~0.2 to ~0.09 ms per call. Cyclic garbage waits at most 10,000
    allocations (a few MB) longer; objects without cycles are freed at once as before.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


async def _open(settings: SettingsT, handlers: HandlersFactory[SettingsT] | None,
                observe: Hook[SettingsT] | None = None) -> Resources[SettingsT]:
    pool = await open_pool(settings.database_url.get_secret_value())
    kafka = KafkaConnection.from_settings(settings)  # one place: every client authenticates alike
    producer = make_producer(kafka)
    await producer.start()
    relay = OutboxRelay(pool, producer, settings.service_name, settings.outbox_poll_seconds,
                        linger_seconds=settings.outbox_linger_seconds, quiet_seconds=settings.outbox_quiet_seconds,
                        delivery_log=settings.delivery_log)
    res = Resources(settings, pool, producer, relay, ObjectStore.from_settings(settings))
    res.tasks.append(_essential(relay.run(), "outbox-relay"))
    res.tasks.append(asyncio.create_task(_observe_loop(res, observe), name="observe"))
    topic_handlers = handlers(res) if handlers else {}
    if topic_handlers:
        res.consumer = EventConsumer(
            service=settings.service_name, pool=pool, bootstrap=kafka,
            handlers=topic_handlers, relay=relay,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            max_batch=settings.kafka_max_batch, max_attempts=settings.max_attempts,
            fetch_min_bytes=settings.kafka_fetch_min_bytes, fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            fetch_active_wait_ms=settings.kafka_fetch_active_wait_ms,
            fetch_active_seconds=settings.kafka_fetch_active_seconds,
            delivery_log=settings.delivery_log,
        )
        await res.consumer.start()
        res.tasks.append(_essential(res.consumer.run(), "consumer"))
    return res


def _essential(coro: Any, name: str) -> asyncio.Task:
    """A task the service is useless without: if it ends other than by cancellation, the whole
    process shuts down (gracefully, through uvicorn) and exits with EXIT_TASK_DIED."""
    task = asyncio.create_task(coro, name=name)

    def died(t: asyncio.Task) -> None:
        if t.cancelled():
            return
        exc = t.exception()
        log.critical("%s task ended (%s); stopping the process so that it is restarted", name,
                     f"{type(exc).__name__}: {exc}" if exc else "returned", exc_info=exc)
        _fatal.append(name)
        for server in _server:  # graceful: the lifespan closes the pool and producer, then serve() exits
            server.should_exit = True

    task.add_done_callback(died)
    return task


async def _close(res: Resources) -> None:
    for task in res.tasks:
        task.cancel()
    await asyncio.gather(*res.tasks, return_exceptions=True)
    if res.consumer:
        await res.consumer.stop()  # bounded: a broker that cannot answer never holds the exit
    for resource in res.extra.values():  # e.g. an LLM client opened by the handlers
        if hasattr(resource, "aclose"):
            await resource.aclose()
    await stop_producer(res.producer)
    await res.pool.close()


async def _observe_loop(res: Resources, observe: Hook | None = None) -> None:
    """Refresh gauges that are read from the database, and prune long-published outbox rows."""
    while True:
        with contextlib.suppress(Exception):
            await res.relay.observe_backlog()
            async with res.pool.connection() as conn:
                await conn.execute(
                    "DELETE FROM outbox WHERE published_at < now() - interval '1 day'"
                )
                await conn.commit()
        if observe:
            try:
                await _maybe_await(observe(res))
            except Exception:  # noqa: BLE001 - a gauge refresh must never stop the loop
                log.warning("refreshing %s gauges failed", res.settings.service_name, exc_info=True)
        await asyncio.sleep(5)


async def _healthz(request: Request) -> Response:
    """503 when the process cannot do its work (a dead task, no database, consumer not joined);
    200 otherwise, with `consumer` detail: partitions paused while a dependency is down are the
    consumer working as designed, not a reason for a liveness probe to restart the process."""
    res: Resources = request.app.state.resources
    problems = [f"{t.get_name()} stopped" for t in res.tasks if t.done()]
    try:
        async with res.pool.connection(timeout=5) as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - health reports every failure, but not its text
        log.warning("health check: database unreachable: %s", exc)
        problems.append(f"database unreachable ({type(exc).__name__})")
    body: dict[str, Any] = {"service": res.settings.service_name}
    if res.consumer is not None:
        if not res.consumer.ready:
            problems.append("consumer not yet joined")
        body["consumer"] = res.consumer.state()
    if problems:
        return JSONResponse({"status": "unhealthy", "problems": problems, **body}, status_code=503)
    paused = bool(body.get("consumer", {}).get("paused"))
    return JSONResponse({"status": "degraded" if paused else "ok", **body})


async def _event_too_large(request: Request, exc: Exception) -> Response:
    """An event that cannot travel is the caller's problem, told as problem+json (RFC 9457)."""
    return JSONResponse({"type": "about:blank", "title": "Content Too Large", "status": 413, "detail": str(exc),
                         "instance": request.url.path}, status_code=413, media_type="application/problem+json")


async def _metrics(request: Request) -> Response:
    token = request.app.state.resources.settings.metrics_token
    if token is not None and not secrets.compare_digest(
            request.headers.get("authorization", "").encode(), f"Bearer {token.get_secret_value()}".encode()):
        return JSONResponse({"type": "about:blank", "title": "Unauthorized", "status": 401,
                             "detail": "/metrics needs the metrics token", "instance": "/metrics"},
                            status_code=401, media_type="application/problem+json",
                            headers={"WWW-Authenticate": "Bearer"})
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


# Headers on every response. The CSP fits the reviewer page (own scripts and styles, images as
# blob: URLs made from fetched renders); JSON answers are unaffected by it.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline';"
                                 b" img-src 'self' blob: data:; connect-src 'self'; object-src 'none';"
                                 b" base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response (plain ASGI, like HttpMetrics)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _add_http_metrics(app: FastAPI, service: str) -> None:
    app.add_middleware(HttpMetrics, service=service)


class HttpMetrics:
    """Request count and latency per route template. A plain ASGI middleware: Starlette's
    BaseHTTPMiddleware costs a task and a stream per request, which shows on a busy gateway."""

    def __init__(self, app: Any, service: str) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = "500"  # an unhandled exception propagates past us and becomes a 500 outside

        async def send_and_record(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            if template not in ("/metrics", "/healthz"):
                metrics.child(metrics.HTTP_REQUESTS, self.service, scope["method"], template, status).inc()
                metrics.child(metrics.HTTP_LATENCY, self.service, scope["method"], template).observe(
                    time.perf_counter() - started)


async def _maybe_await(value: Any) -> None:
    if asyncio.iscoroutine(value):
        await value


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run the app until SIGTERM/SIGINT (uvicorn handles both and runs the lifespan's close)."""
    logging.basicConfig(
        level=settings.log_level,
        format=f"%(asctime)s {settings.service_name} %(levelname)s %(name)s: %(message)s",
    )
    server = uvicorn.Server(uvicorn.Config(app, host=settings.http_host, port=settings.http_port,
                                           log_level=settings.log_level.lower(), access_log=False))
    _server.append(server)
    server.run(sockets=None if settings.http_fd is None else [socket.socket(fileno=settings.http_fd)])
    if _fatal:
        log.critical("exiting with status %d: %s stopped", EXIT_TASK_DIED, ", ".join(_fatal))
        sys.exit(EXIT_TASK_DIED)
