"""One kept-alive HTTP/1.1 connection for one simulated reader's requests, parsed by httptools.

Why: the simulated panel reads through the gateway's HTTP API, two requests per vote. Through
httpx that cost 6.5-9 ms of the demo process's CPU per vote (its pool, URL and header objects,
the response stream), four times what the gateway spends answering; on two cores the panel's
own event loop then paced the funnel. A reader sends one request at a time, so one connection
needs no pool. The connection itself (write a request, parse the answer with httptools) is the
LLM transport's (`services.common.http1.Connection`); what is here is the reader's side: the
request line and headers, the one resend a dropped idle connection allows, and httpx's errors.

What it does not do: TLS, proxies, redirects, cookies, streamed bodies. The gateway's review
routes need none of them; every other call of the CLI and tests stays on httpx (`client.Gateway`).
Failures are raised as httpx's exceptions (ConnectError, ReadError, ReadTimeout), as the httpx
client would raise them, so callers handle both alike.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import httpx2

from services.common.http1 import Connection


class Answer:
    """A response, whole: what the callers of `client.Gateway.request` read from httpx's."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes) -> None:
        self.status_code, self.headers, self.content = status_code, headers, content

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self) -> Any:
        return json.loads(self.content)


class KeepAliveConnection:
    """Sequential requests to one origin over one kept-alive connection (reconnects when the
    server closed it). Not for concurrent use: one per reader, as a reader reads one study at a time."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http":
            raise ValueError(f"KeepAliveConnection speaks plain http only, not {parts.scheme!r}")
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self._host_header = f"{self.host}:{self.port}"
        self._connection: Connection | None = None

    async def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                      json_body: Any = None, params: dict[str, str] | None = None) -> Answer:
        """Send one request and return its whole response. A kept-alive connection the server has
        closed meanwhile is detected before anything is read back and the request is sent once more
        on a new connection: the only calls made through here are reads and idempotent votes
        (each with its Idempotency-Key), so a second send cannot apply twice."""
        target = self.prefix + path + (f"?{urlencode(params)}" if params else "")
        body = b"" if json_body is None else json.dumps(json_body, separators=(",", ":")).encode()
        lines = [f"{method} {target} HTTP/1.1", f"host: {self._host_header}", "accept: application/json",
                 *(f"{k}: {v}" for k, v in (headers or {}).items())]
        if json_body is not None or method in ("POST", "PUT", "PATCH"):
            lines += ["content-type: application/json", f"content-length: {len(body)}"]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        reused = self._connection is not None and not self._connection.closed
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    return await self._exchange(head, body)
                except _ClosedBeforeAnswer:
                    if not reused:
                        raise
                    return await self._exchange(head, body)  # the server had closed the idle connection
        except TimeoutError:
            self.close()
            raise httpx.ReadTimeout(f"{method} {target}: no answer in {self.timeout:.0f}s") from None
        except _ClosedBeforeAnswer as exc:
            raise httpx.ReadError(f"{method} {target}: {exc}") from None
        except BaseException:
            self.close()  # cancelled or failed mid-exchange: the connection's state is unknown
            raise

    async def _exchange(self, head: bytes, body: bytes) -> Answer:
        if self._connection is None or self._connection.closed:
            try:
                _, self._connection = await asyncio.get_running_loop().create_connection(
                    Connection, self.host, self.port)
            except OSError as exc:
                raise httpx.ConnectError(f"cannot connect to {self._host_header}: {exc}") from exc
        connection = self._connection
        try:
            status, headers, content = await connection.exchange(head, body)
        except httpx2.ReadError as exc:
            self.close()
            if not connection.received:
                raise _ClosedBeforeAnswer(str(exc)) from exc
            raise httpx.ReadError(f"connection lost mid-response: {exc}") from exc
        except httpx2.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        return Answer(status, {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in headers},
                      content)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class _ClosedBeforeAnswer(Exception):
    """The connection ended before a byte of the response: the request may be sent again."""
