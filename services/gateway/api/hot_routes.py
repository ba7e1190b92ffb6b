"""`GET /api/v1/reviews/next` and the vote, served without FastAPI's per-request machinery.

Every reader makes these two calls once per study, so they are most of the gateway's CPU; profiled
under load (bench/bench_gateway_load.py, py-spy), FastAPI spent more on them than the work itself:
dependency solving, reading the body through its Request, validating the response model and
serialising it again. Here they are plain ASGI routes placed ahead of the FastAPI ones. They run
the same code (`next_for`, `cast_vote` in routes/reviews.py) behind the same middleware (token
checked first, body limit, security headers, request metrics under the same route template) and
the same exception handlers (Problem → problem+json). Anything the fast reading does not take as
it is — a query parameter out of bounds, a body that is not plain valid JSON for a vote, a second
Authorization header — is handed, body and all, to the FastAPI route, so every refusal is exactly
FastAPI's (its 422s included); the OpenAPI document still comes from the FastAPI declarations.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from pydantic import ValidationError
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from services.gateway.api.routes.reviews import VoteIn, cast_vote, next_for
from services.gateway.auth import USER_SCOPE_KEY, Role, check_role

# Set on a request the fast route handed back: the router then skips it and reaches FastAPI's.
_DECLINED = "radcurate.hot_route_declined"
_REVIEWER = (Role.REVIEWER,)
_MAX_AFTER, _MAX_AFTER_LENGTH, _MAX_IDEMPOTENCY_KEY = 8, 64, 200  # as declared on the FastAPI routes

# A handler answers the request (a status and a JSON body, or no body) or returns None to decline it.
Answer = tuple[int, bytes | None]
Handler = Callable[[Scope, bytes], Awaitable[Answer | None]]


class HotRoute(Route):
    """One method on one path template, matched before the FastAPI routes. Its `path` is the
    FastAPI route's template, which HttpMetrics labels the request with."""

    def __init__(self, path: str, method: str, handler: Handler, *, reads_body: bool) -> None:
        super().__init__(path, self._serve, methods=[method], name=f"hot:{method} {path}", include_in_schema=False)
        self.method, self.handler, self.reads_body = method, handler, reads_body
        self.app = self._serve  # an ASGI callable, not a Starlette request/response endpoint

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != self.method or _DECLINED in scope:
            return Match.NONE, {}
        match, child = super().matches(scope)
        if match is Match.FULL:
            child["route"] = self
        return match, child

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive) if self.reads_body else b""
        answer = await self.handler(scope, body) if USER_SCOPE_KEY in scope else None
        if answer is None:
            scope[_DECLINED] = True
            await scope["router"](scope, _replay(body, receive) if self.reads_body else receive, send)
            return
        status, content = answer
        # As Starlette's JSONResponse sends them; a 204 has neither (as Starlette's Response).
        headers = ([(b"content-length", str(len(content)).encode()), (b"content-type", b"application/json")]
                   if content is not None else [])
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content or b""})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()  # BodyLimit's receive: raises past the limit (413)
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

async def _next(scope: Scope, _: bytes) -> Answer | None:
    after = [v for k, v in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True) if k == "after"]
    if len(after) > _MAX_AFTER or any(len(a) > _MAX_AFTER_LENGTH for a in after):
        return None
    user = check_role(scope[USER_SCOPE_KEY], _REVIEWER)
    assignment = await next_for(scope["app"].state.resources, user.user_id, after)
    if assignment is None:
        return 204, None
    return 200, assignment.model_dump_json().encode()


async def _vote(scope: Scope, body: bytes) -> Answer | None:
    content_type, _ = _header(scope, b"content-type")
    key, keys = _header(scope, b"idempotency-key")
    if (content_type is None or content_type.partition(";")[0].strip().lower() != "application/json"
            or keys > 1 or (key is not None and len(key) > _MAX_IDEMPOTENCY_KEY)):
        return None
    try:
        vote = VoteIn.model_validate(json.loads(body))
    except (ValueError, ValidationError):  # not JSON, or not a vote: FastAPI's route says why (422)
        return None
    user = check_role(scope[USER_SCOPE_KEY], _REVIEWER)
    out, replayed = await cast_vote(scope["app"].state.resources, user.user_id, scope["path_params"]["assignment_id"],
                                    vote, key)
    return (200 if replayed else 201), out.model_dump_json().encode()


def install(routes: list[Any]) -> None:
    """Put the hot routes first in an app's route list (`app.router.routes`)."""
    routes[:0] = [HotRoute("/api/v1/reviews/next", "GET", _next, reads_body=False),
                  HotRoute("/api/v1/reviews/{assignment_id}/vote", "POST", _vote, reads_body=True)]

