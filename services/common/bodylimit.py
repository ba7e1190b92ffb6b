"""Request bodies are bounded before anyone reads them.

Without this, FastAPI reads (and parses) a whole JSON body before a route's dependencies run, so
a 2 GB body to any route, with or without a token, is held in memory first. `BodyLimit` is an
ASGI middleware: a declared Content-Length over the route's limit is refused at once with 413,
and a body sent without one (chunked) is counted as it streams and cut off at the limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from starlette.exceptions import HTTPException

DEFAULT_BODY_LIMIT = 1024 * 1024  # JSON commands, votes, comments: a few kB in practice


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes its limit. An HTTPException, so that
    FastAPI's body reader lets it through unchanged (it turns other errors into a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than this route accepts ({limit} bytes)")


class BodyLimit:
    """Refuse bodies over `limits[path]` (exact path) or `default` bytes, before they are read."""

    def __init__(self, app: Any, limits: Mapping[str, int] | None = None, default: int = DEFAULT_BODY_LIMIT) -> None:
        self.app, self.default = app, default
        self.limits = {path.rstrip("/"): n for path, n in (limits or {}).items()}

    def limit_for(self, path: str) -> int:
        return self.limits.get(path.rstrip("/"), self.default)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await problem(send, 400, "Content-Length is not a number", scope["path"])
                return
            if int(declared) > limit:
                await problem(send, 413, BodyTooLarge(limit).detail, scope["path"])
                return
        received = 0

        async def bounded_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, bounded_receive, send)


async def problem(send: Callable, status: int, detail: str, instance: str) -> None:
    """An RFC 9457 problem answer, sent straight from an ASGI middleware."""
    titles = {400: "Bad Request", 401: "Unauthorized", 413: "Content Too Large"}
    body = json.dumps({"type": "about:blank", "title": titles.get(status, "Error"), "status": status,
                       "detail": detail, "instance": instance}).encode()
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]  # the unread body must not be taken for the next request
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
