"""`GET /api/v1/reviews/next` and the vote, served without FastAPI's per-request machinery.

Every reader makes these two calls once per study, so they are most of the gateway's CPU. Profiled
under load (bench/bench_gateway_load.py, py-spy, cProfile), FastAPI spent more on them than the
work itself: dependency solving, reading the body through its Request, validating the response
model and serialising it again; and then the ASGI chain around any route (~16% of the gateway's
CPU): our token check, security headers, body limit and request metrics as four middlewares, then
Starlette's exception layer, FastAPI's exit stack and the router, each wrapping `send`.

`HotPath` is therefore the outermost middleware of the app (only Starlette's server-error layer
is outside it) and does for these two calls, inline, what that chain does: the token checked
first (a refusal sent exactly as AuthenticateFirst sends it), the body bounded before it is read,
the same security headers, the request counted under the FastAPI route's template, and an
exception answered by the app's own exception handlers (Problem → problem+json). It runs the same
code as the FastAPI routes (`next_for`, `cast_vote` in routes/reviews.py). Anything it does not
take as it is — a query parameter out of bounds or spelt unusually, a body that is not plain valid JSON for a vote
or has no Content-Length, a second Authorization header, a root path — it hands, body and all, to
the full chain and the FastAPI route, so every refusal is exactly FastAPI's (its 422s included);
the OpenAPI document still comes from the FastAPI declarations.

A `GET /next` whose token is not in the token cache (each reader's first request, and again
whenever the cache has let the token go) does not look the token up first: the lookup travels in
the statement that opens the next read (`next_for_token`), one round trip and one pool checkout
instead of two, and only a valid reviewer's read is opened; an invalid token is still answered
exactly as AuthenticateFirst answers it, another role's as the route's role check does.
"""

from __future__ import annotations

import inspect
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common import metrics
from services.common.bodylimit import DEFAULT_BODY_LIMIT, problem
from services.common.runtime import SECURITY_HEADERS
from services.gateway.api.routes.reviews import VoteIn, cast_vote, next_for, next_for_token
from services.gateway.auth import (
    UNKNOWN_TOKEN,
    Role,
    User,
    authenticate,
    bearer_digest,
    check_role,
    remember,
    token_cache,
)
from services.gateway.problems import Problem

_REVIEWER = (Role.REVIEWER,)
_MAX_AFTER, _MAX_AFTER_LENGTH, _MAX_IDEMPOTENCY_KEY = 8, 64, 200  # as declared on the FastAPI routes

# A handler answers the request (a status and a JSON body, or no body) or returns None to decline it.
Answer = tuple[int, bytes | None]
Handler = Callable[[Scope, User, bytes], Awaitable[Answer | None]]
# A handler for a token not in the token cache, given its digest: it looks the token up itself,
# with its own statement, and answers _UNAUTHENTICATED when the token is not valid.
Uncached = Callable[[Scope, str], Awaitable[Answer | None]]
_UNAUTHENTICATED: Answer = (401, None)


class _Route:
    """One method on one path template (the FastAPI route's, which the request metrics are labelled with)."""

    def __init__(self, method: str, template: str, handler: Handler, *, reads_body: bool,
                 uncached: Uncached | None = None) -> None:
        self.method, self.template, self.handler, self.reads_body = method, template, handler, reads_body
        self.uncached = uncached
        # Starlette's `{name}` matches one path segment ([^/]+), as here.
        self.pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$")

    def count(self, service: str, status: int, seconds: float) -> None:
        """The request counted as HttpMetrics counts it (under the FastAPI route's template)."""
        metrics.child(metrics.HTTP_REQUESTS, service, self.method, self.template, str(status)).inc()
        metrics.child(metrics.HTTP_LATENCY, service, self.method, self.template).observe(seconds)


class HotPath:
    """ASGI middleware: the reader's two calls per study served inline; everything else passes on."""

    def __init__(self, app: ASGIApp, service: str = "gateway", body_limit: int = DEFAULT_BODY_LIMIT) -> None:
        self.app, self.service, self.body_limit = app, service, body_limit
        self.routes = (_Route("GET", "/api/v1/reviews/next", _next, reads_body=False, uncached=_next_uncached),
                       _Route("POST", "/api/v1/reviews/{assignment_id}/vote", _vote, reads_body=True))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._route(scope) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        authorization = [v for k, v in scope["headers"] if k == b"authorization"]
        if len(authorization) != 1:  # none: AuthenticateFirst's 401; several: the routes' own reading
            await self.app(scope, receive, send)
            return
        route, params = found
        try:  # first, before the body is read: as AuthenticateFirst, and answered as it answers
            header = authorization[0].decode("latin-1")
            digest = bearer_digest(header)
            user = token_cache.get(digest)
            if user is None and route.uncached is None:
                user = await authenticate(header, scope["app"].state)
        except Problem as exc:
            await problem(send, exc.status, exc.detail, scope["path"])
            return
        uncached = route.uncached
        if user is None and uncached is not None:
            # A reader's first `next` (or its first once the cache let the token go): the lookup
            # travels in the route's own statement, one round trip and one pool checkout less.
            scope["path_params"] = params
            await self._serve(route, scope, receive, send, lambda: uncached(scope, digest), b"")
            return
        assert user is not None  # looked up above unless the route looks it up itself
        body = b""
        if route.reads_body:
            length = _content_length(scope)
            if length is None or length > self.body_limit:  # BodyLimit says why (400, 413), or streams it
                await self.app(scope, receive, send)
                return
            body = await _read_body(receive)
        scope["path_params"] = params
        await self._serve(route, scope, receive, send, lambda: route.handler(scope, user, body), body)

    def _route(self, scope: Scope) -> tuple[_Route, dict[str, str]] | None:
        if scope.get("root_path"):
            return None
        for route in self.routes:
            if scope["method"] == route.method and (match := route.pattern.match(scope["path"])):
                return route, match.groupdict()
        return None

    async def _serve(self, route: _Route, scope: Scope, receive: Receive, send: Send,
                     handle: Callable[[], Awaitable[Answer | None]], body: bytes) -> None:
        started, status = time.perf_counter(), 500  # an exception no handler takes: a 500 outside
        try:
            try:
                answer = await handle()
            except Exception as exc:
                handler = _exception_handler(scope["app"], exc)
                if handler is None:
                    raise
                response = handler(Request(scope, receive), exc)
                if inspect.isawaitable(response):
                    response = await response
                status = response.status_code
                await response(scope, receive, _with_security_headers(send))
                return
            if answer is None:
                del scope["path_params"]
                await self.app(scope, _replay(body, receive) if route.reads_body else receive, send)
                status = 0  # the chain's HttpMetrics counted it
                return
            if answer is _UNAUTHENTICATED:  # as AuthenticateFirst answers it, uncounted as there
                await problem(send, 401, UNKNOWN_TOKEN, scope["path"])
                status = 0
                return
            status, content = answer
            # As Starlette's JSONResponse sends them (a 204 has neither), then SecurityHeaders' additions.
            headers = ([(b"content-length", str(len(content)).encode()), (b"content-type", b"application/json"),
                        *SECURITY_HEADERS] if content is not None else list(SECURITY_HEADERS))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": content or b""})
        finally:
            if status:  # as HttpMetrics records it
                route.count(self.service, status, time.perf_counter() - started)


def _exception_handler(app: Any, exc: Exception) -> Any:
    """The app's handler for `exc`, looked up as Starlette's exception layer looks it up (the
    handlers for 500 / Exception belong to its server-error layer, outside this middleware)."""
    handlers = app.exception_handlers
    for cls in type(exc).__mro__:
        if cls in handlers and cls is not Exception:
            return handlers[cls]
    return None


def _with_security_headers(send: Send) -> Send:
    """`send` with SecurityHeaders' additions: each of SECURITY_HEADERS the response lacks."""
    async def sender(message: dict) -> None:
        if message["type"] == "http.response.start":
            present = {k.lower() for k, _ in message.get("headers", [])}
            message = {**message, "headers": [*message.get("headers", []),
                                              *((k, v) for k, v in SECURITY_HEADERS if k not in present)]}
        await send(message)

    return sender


def _content_length(scope: Scope) -> int | None:
    """The declared Content-Length when it is one plain number; None otherwise (absent, repeated, odd)."""
    values = [v for k, v in scope["headers"] if k == b"content-length"]
    return int(values[0]) if len(values) == 1 and values[0].isdigit() else None


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body already read once, then whatever the client sends next."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Any:
        return pending.pop() if pending else await receive()

    return replay


def _header(scope: Scope, name: bytes) -> tuple[str | None, int]:
    """The first value of a header and how many times it was sent."""
    values = [v for k, v in scope["headers"] if k == name]
    return (values[0].decode("latin-1") if values else None), len(values)


# Each handler first declines what FastAPI's route would look at more closely, then checks the
# role: a request that reaches the role check is one FastAPI would refuse only for the role.

def _query(scope: Scope) -> tuple[list[str], str | None] | None:
    """The query's `after` values and its `next` value (None if not given), or None when FastAPI's
    route would look at them more closely: `after` beyond its bounds, `next` repeated. Other
    parameters are ignored, as FastAPI ignores them."""
    query = scope["query_string"]
    if not query:
        return [], None
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    after = [v for k, v in pairs if k == "after"]
    nexts = [v for k, v in pairs if k == "next"]
    if len(after) > _MAX_AFTER or any(len(a) > _MAX_AFTER_LENGTH for a in after) or len(nexts) > 1:
        return None
    return after, (nexts[0] if nexts else None)


# FastAPI's reading of a bool query parameter, for the spellings taken here (any other: its 422 or its own reading).
_BOOLS = {None: False, "true": True, "1": True, "false": False, "0": False}


async def _next(scope: Scope, user: User, _: bytes) -> Answer | None:
    query = _query(scope)
    if query is None:
        return None
    check_role(user, _REVIEWER)
    assignment = await next_for(scope["app"].state.resources, user.user_id, query[0])
    if assignment is None:
        return 204, None
    return 200, assignment.model_dump_json().encode()


async def _next_uncached(scope: Scope, token_sha256: str) -> Answer | None:
    """`_next` for a token not in the token cache: the token looked up and the next assignment
    opened in one statement (a reviewer's only), then answered as `_next` answers; the user
    remembered in the token cache as `authenticate` remembers it."""
    query = _query(scope)
    if query is None:
        return None  # the full chain authenticates, then FastAPI's route says why
    row, assignment = await next_for_token(scope["app"].state.resources, token_sha256, query[0])
    if row is None:
        return _UNAUTHENTICATED
    check_role(remember(token_sha256, row), _REVIEWER)
    if assignment is None:
        return 204, None
    return 200, assignment.model_dump_json().encode()


async def _vote(scope: Scope, user: User, body: bytes) -> Answer | None:
    content_type, _ = _header(scope, b"content-type")
    key, keys = _header(scope, b"idempotency-key")
    query = _query(scope)
    if (content_type is None or content_type.partition(";")[0].strip().lower() != "application/json"
            or keys > 1 or (key is not None and len(key) > _MAX_IDEMPOTENCY_KEY)
            or query is None or query[1] not in _BOOLS):
        return None
    try:
        vote = VoteIn.model_validate(json.loads(body))
    except (ValueError, ValidationError):  # not JSON, or not a vote: FastAPI's route says why (422)
        return None
    check_role(user, _REVIEWER)
    after, with_next = query
    # `next=true`: the answer carries the reader's next assignment, opened with the vote (one request per study).
    out, replayed = await cast_vote(scope["app"].state.resources, user.user_id, scope["path_params"]["assignment_id"],
                                    vote, key, after if _BOOLS[with_next] else None)
    return (200 if replayed else 201), out.model_dump_json().encode()
