"""A lean blocking HTTP/1.1 keep-alive transport for the object store's own PUTs (and the
consensus service's reads and copies of the objects it checks and releases).

Why: through urllib3 (its pool manager, http.client's request building and its email-parser
header reading) a PUT cost the gateway ~0.28 ms of Python per request, twice per ingested study
(the DICOM object and its instance manifest): about a quarter of the gateway's ingest CPU
(issue 15 §2). The object store's PUT needs only this: one request at a time per connection,
connections kept alive in a bounded pool, the response parsed by httptools (uvicorn's parser,
as services/common/http1 on the asyncio side) and read whole (an S3 PUT answers with an empty
body or a short error document).

It keeps urllib3's behaviour that callers rely on: the connect and read timeouts, and the same
retry policy as `objectstore.http_client` (at most `retries` retries, with backoff, after a
connection failure or a 500/502/503/504; the body rewound for each). A kept-alive connection the
server had closed while idle is reconnected and the request resent at once (a PUT is idempotent).
Failures are raised as OSError (ConnectionError, TimeoutError), which `failures.is_transient`
counts as the store not answering.

A GET's body can be handed to a `sink` as it arrives instead of being kept (objects can be large):
then a failure after some of it was handed on is raised at once, never retried, since the sink
cannot take the bytes back (the caller reads the object again, from its start).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

import httptools

RETRY_STATUS = frozenset({500, 502, 503, 504})
_BODY_IN_HEAD_MAX = 64 * 1024  # a body up to this size goes out in the same write as the head
_CHUNK = 1 << 20


@dataclass
class Answer:
    """A response read whole: what ObjectStore reads of urllib3's response."""

    status: int
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case


class _Response:
    """httptools' callbacks for one response."""

    def __init__(self, sink: Callable[[bytes], object] | None = None) -> None:
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.sink = sink  # a 200's body goes here, not to `body` (an error document is kept)
        self.sunk = False
        self.complete = False
        self.head_complete = False
        self.keep_alive = False
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.head_complete = True

    def on_body(self, body: bytes) -> None:
        if self.sink is not None and self.parser.get_status_code() == 200:
            self.sunk = True
            self.sink(body)
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()  # asked now: the parser resets after the message


class PutTransport:
    """`urlopen(method, url, body=..., headers=...)` for one origin (plain HTTP), as urllib3's
    PoolManager answers it for ObjectStore's PUT: `.status`, `.data`, `.headers`."""

    def __init__(self, host: str, port: int, *, connect_s: float, read_s: float, pool_size: int = 16,
                 retries: int = 2, backoff_s: float = 0.2) -> None:
        self._address = (host, port)
        self._connect_s, self._read_s = connect_s, read_s
        self._pool_size, self._retries, self._backoff_s = pool_size, retries, backoff_s
        self._idle: list[socket.socket] = []
        self._lock = threading.Lock()

    def urlopen(self, method: str, url: str, *, body: bytes | BinaryIO | None = None,
                headers: dict[str, str], preload_content: bool = True,
                sink: Callable[[bytes], object] | None = None) -> Answer:
        """Send the request and read its response whole (`preload_content` is urllib3's spelling;
        the response is always read whole here). With `sink`, a 200's body is handed to it as it
        arrives (the Answer's `data` is then empty), and not retried once any of it was."""
        del preload_content
        path = url.split("://", 1)[-1]
        path = path[path.find("/"):] if "/" in path else "/"
        head = (f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                + "\r\n").encode("latin-1")
        start = body.tell() if body is not None and not isinstance(body, bytes) else 0
        attempt = 0
        while True:
            sock, reused = self._checkout()
            try:
                answer, keep = self._exchange(sock, head, body, start, sink)
            except (OSError, httptools.HttpParserError) as exc:
                sock.close()
                if isinstance(exc, _Sunk):
                    raise ConnectionError(f"the object store's answer broke off: {exc.__cause__}") from exc
                if reused and isinstance(exc, _NotAnswered):
                    continue  # an idle connection the server had closed: resent at once, not a retry
                if attempt >= self._retries:
                    if isinstance(exc, OSError):
                        raise
                    raise ConnectionError(f"the object store's answer could not be parsed: {exc}") from exc
                attempt += 1
                time.sleep(self._backoff_s * 2 ** (attempt - 1))
                continue
            if keep:
                self._checkin(sock)
            else:
                sock.close()
            if answer.status in RETRY_STATUS and attempt < self._retries:
                attempt += 1
                time.sleep(self._backoff_s * 2 ** (attempt - 1))
                continue
            return answer

    def _exchange(self, sock: socket.socket, head: bytes, body: bytes | BinaryIO | None,
                  start: int, sink: Callable[[bytes], object] | None = None) -> tuple[Answer, bool]:
        try:
            _send(sock, head, body, start)
        except ConnectionError as exc:  # reset or a broken pipe: nothing of an answer has come
            raise _NotAnswered(f"the object store's connection failed while sending: {exc}") from exc
        response = _Response(sink)
        try:
            return self._receive(sock, response)
        except (OSError, httptools.HttpParserError) as exc:
            if response.sunk:
                raise _Sunk() from exc
            raise

    def _receive(self, sock: socket.socket, response: _Response) -> tuple[Answer, bool]:
        parser = response.parser
        received = False
        while not response.complete:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise
            except ConnectionError as exc:
                if not received:
                    raise _NotAnswered(f"the object store closed the connection before answering: {exc}") from exc
                raise
            if not data:
                if not received:
                    raise _NotAnswered("the object store closed the connection before answering")
                if response.head_complete and not {"content-length", "transfer-encoding"} & response.headers.keys():
                    break  # a body that ends when the server closes
                raise ConnectionError("the object store closed the connection in the middle of its answer")
            received = True
            parser.feed_data(data)
        else:
            return Answer(parser.get_status_code(), b"".join(response.body), response.headers), response.keep_alive
        return Answer(parser.get_status_code(), b"".join(response.body), response.headers), False

    def _checkout(self) -> tuple[socket.socket, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        sock = socket.create_connection(self._address, timeout=self._connect_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self._read_s)
        return sock, False

    def _checkin(self, sock: socket.socket) -> None:
        with self._lock:
            if len(self._idle) < self._pool_size:
                self._idle.append(sock)
                return
        sock.close()

    def close(self) -> None:
        """Close the idle connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for sock in idle:
            with contextlib.suppress(OSError):
                sock.close()


def _send(sock: socket.socket, head: bytes, body: bytes | BinaryIO | None, start: int) -> None:
    if body is None:
        sock.sendall(head)
    elif isinstance(body, bytes):
        if len(body) <= _BODY_IN_HEAD_MAX:
            sock.sendall(head + body)
        else:
            sock.sendall(head)
            sock.sendall(body)
    else:  # a file, from where the caller left it, to its end (as urllib3 sends one)
        body.seek(start)
        sock.sendall(head)
        while chunk := body.read(_CHUNK):
            sock.sendall(chunk)


class _NotAnswered(ConnectionError):
    """The connection closed before any byte of the response arrived."""


class _Sunk(ConnectionError):
    """The exchange failed after part of the body was handed to the caller's sink."""
