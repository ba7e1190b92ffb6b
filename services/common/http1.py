"""A lean HTTP/1.1 keep-alive transport under the openai client's httpx2 layer.

Why: on the LLM path the HTTP transport was a third of the client's CPU per call. The openai
client's aiohttp transport runs each request through aiohttp's session (cookie jar, tracing
hooks, its own URL and header objects, a response stream read back through httpx2 in chunks);
its default httpx2 transport through httpcore's pool, which polls every idle connection on each
request. An inference server answers each call with one small JSON body, so this transport does
only what that needs: one request at a time per connection, connections kept alive in a bounded
pool, the response parsed by httptools (uvicorn's parser) and handed to httpx2 whole (~0.75
instead of ~1.05 ms of client CPU per call on the LLM path, bench/bench_llm.py).

What goes on the wire stays the openai client's: URL, auth and headers, timeouts. Failures are
raised as httpx2's exceptions, so the openai client maps them as it maps its other transports'
(timeouts to APITimeoutError, the rest to APIConnectionError), and the LLM client's retry policy
sees the same errors. The LLM client's calls skip httpx2's request and response objects: they
send the request head the openai client built once through `send` (services.common.llm._DirectRoute).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Mapping
from typing import cast

import httptools
import httpx2

Origin = tuple[bytes, str, int]  # scheme, host, port
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers, body
_BODY_IN_HEAD_MAX = 64 * 1024  # a body up to this size goes out in the same write as the head


def origin_of(url: httpx2.URL) -> Origin:
    """The (scheme, host, port) a URL's connections are pooled by."""
    return url.raw_scheme, url.host, url.port or (443 if url.raw_scheme == b"https" else 80)


class Connection(asyncio.Protocol):
    """One kept-alive connection: write a request, collect the response httptools parses.

    Shared by this transport and the simulated panel's reader client (radcurate/keepalive.py).
    `received` says whether any byte of the current response arrived: a request whose connection
    closed before that (a kept-alive connection the server had dropped while idle) was not answered.
    """

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[Answer] | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._until_eof = False  # a response without Content-Length or chunking ends when the server closes
        self.closed = False
        self.received = False
        self.idle_since = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is one, not a subclass

    def data_received(self, data: bytes) -> None:
        if self._answer is None:  # bytes nobody asked for: this connection is out of step
            self.close()
            return
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.close()
            self._settle(exception=httpx2.RemoteProtocolError(f"malformed HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._until_eof:
            self._settle(answer=(self._parser.get_status_code(), self._headers, b"".join(self._body)))
        else:
            self._settle(exception=httpx2.ReadError(f"the server closed the connection before answering"
                                                    f" ({exc or 'end of stream'})"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        names = {name.lower() for name, _ in self._headers}
        self._until_eof = b"content-length" not in names and b"transfer-encoding" not in names

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._until_eof = False
        if not self._parser.should_keep_alive():
            self.close()
        self._settle(answer=(self._parser.get_status_code(), self._headers, b"".join(self._body)))

    # ours
    async def exchange(self, head: bytes, body: bytes, timeout: float | None = None) -> Answer:
        """Send one request and wait for its whole response; TimeoutError if it has not come
        within `timeout` seconds (the connection is then out of step: close it). A timer on the
        answer rather than `asyncio.timeout`, which costs ~4 us more per call (its task lookups
        and cancel bookkeeping), ~2% of the LLM client's CPU per call."""
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        self._answer = answer = loop.create_future()
        self._headers, self._body, self.received = [], [], False
        if len(body) <= _BODY_IN_HEAD_MAX:
            self._transport.write(head + body)  # one send: each system call is dear on a busy machine
        else:
            self._transport.writelines((head, body))
        timer = None if timeout is None else loop.call_later(timeout, self._time_out, answer)
        try:
            return await answer
        finally:
            self._answer = None
            if timer is not None:
                timer.cancel()

    def _time_out(self, answer: asyncio.Future[Answer]) -> None:
        if not answer.done():
            answer.set_exception(TimeoutError())

    def _settle(self, *, answer: Answer | None = None, exception: Exception | None = None) -> None:
        if self._answer is None or self._answer.done():
            return
        if exception is not None:
            self._answer.set_exception(exception)
        else:
            self._answer.set_result(answer)  # type: ignore[arg-type]

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


class Http1Transport(httpx2.AsyncBaseTransport):
    """httpx2's transport interface over kept-alive HTTP/1.1 connections: at most
    `limits.max_connections` open at once; an idle one is reused for at most
    `limits.keepalive_expiry` seconds (servers close idle connections: uvicorn, and so vLLM,
    after 5 s), newest first."""

    def __init__(self, limits: httpx2.Limits, *, verify: ssl.SSLContext | bool = True) -> None:
        if limits.max_connections is None or limits.max_connections < 1:
            raise ValueError("Http1Transport needs a bounded pool (limits.max_connections >= 1)")
        self.max_connections = limits.max_connections
        self._slots = asyncio.Semaphore(limits.max_connections)
        self._keepalive_s = limits.keepalive_expiry if limits.keepalive_expiry is not None else 5.0
        self._verify = verify
        self._ssl_context: ssl.SSLContext | None = None
        self._idle: dict[Origin, deque[Connection]] = {}
        self._open: set[Connection] = set()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        try:
            body = request.content
        except httpx2.RequestNotRead:  # a streamed body: the openai client sends none on this path
            body = await request.aread()
        head = b"".join([request.method.encode(), b" ", url.raw_path, b" HTTP/1.1\r\n",
                         *[b"%s: %s\r\n" % pair for pair in request.headers.raw], b"\r\n"])
        status, headers, content = await self.send(origin_of(url), head, body,
                                                   request.extensions.get("timeout", {}), request)
        return httpx2.Response(status, headers=headers, content=content, request=request,
                               extensions={"http_version": b"HTTP/1.1"})

    async def send(self, origin: Origin, head: bytes, body: bytes, timeouts: Mapping[str, float | None],
                   request: httpx2.Request | None = None) -> Answer:
        """One request already written out (`head` ends with the blank line) on a pooled
        connection, and its whole answer. Failures are httpx2's exceptions (carrying `request`
        when given). The LLM client sends its calls through here directly (services.common.llm)."""
        await self._acquire(timeouts.get("pool"), request)
        try:
            connection = self._idle_connection(origin) or await self._connect(origin, timeouts.get("connect"), request)
            try:
                return await connection.exchange(head, body, timeouts.get("read"))
            except TimeoutError:
                connection.close()
                raise httpx2.ReadTimeout("the server did not answer in time", request=request) from None
            except BaseException:
                connection.close()  # cancelled or failed mid-exchange: its state is unknown
                raise
            finally:
                self._release(origin, connection)
        finally:
            self._slots.release()

    async def _acquire(self, timeout: float | None, request: httpx2.Request | None) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # returns at once: no timer to arm
            return
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx2.PoolTimeout("no free connection in the pool in time", request=request) from None

    def _idle_connection(self, origin: Origin) -> Connection | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            connection = idle.pop()  # the most recently used: the furthest from the server's idle timeout
            if not connection.closed and now - connection.idle_since < self._keepalive_s:
                return connection
            connection.close()
            self._open.discard(connection)
        return None

    async def _connect(self, origin: Origin, timeout: float | None, request: httpx2.Request | None) -> Connection:
        scheme, host, port = origin
        context = self._tls() if scheme == b"https" else None
        try:
            async with asyncio.timeout(timeout):
                _, connection = await asyncio.get_running_loop().create_connection(
                    Connection, host, port, ssl=context, server_hostname=host if context else None)
        except TimeoutError:
            raise httpx2.ConnectTimeout(f"connecting to {host}:{port} timed out", request=request) from None
        except OSError as exc:
            raise httpx2.ConnectError(f"cannot connect to {host}:{port}: {exc}", request=request) from exc
        self._open.add(connection)
        return connection

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = (self._verify if isinstance(self._verify, ssl.SSLContext)
                                 else httpx2.create_ssl_context(verify=self._verify))
        return self._ssl_context

    def _release(self, origin: Origin, connection: Connection) -> None:
        if connection.closed:
            self._open.discard(connection)
            return
        connection.idle_since = time.monotonic()
        self._idle.setdefault(origin, deque()).append(connection)

    async def aclose(self) -> None:
        for connection in self._open:
            connection.close()
        self._open.clear()
        self._idle.clear()
