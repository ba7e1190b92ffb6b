"""The object store's PUT (and GET) transport (services/common/put_transport) against a scripted loopback
server: connections kept alive, bodies sent whole, urllib3's retry policy (connection failures and
500/502/503/504), a dropped idle connection resent at once, and the read timeout."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator

import pytest

from services.common.put_transport import PutTransport


class LoopbackServer:
    """A loopback HTTP/1.1 listener: each accepted connection on its own thread, each request's head
    read and handed to `answer`; counts the connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                rest = self.answer(conn, head, buf)
                if rest is None:
                    return
                buf = rest

    def answer(self, conn: socket.socket, head: bytes, rest: bytes) -> bytes | None:
        """Answer the request whose head is `head` (`rest`: what followed it); returns what is
        left of the input for the next request, or None to close the connection."""
        raise NotImplementedError

    def close(self) -> None:
        self.listener.close()


class Server(LoopbackServer):
    """Answers each request with the next (status, close-after) of `script` (then 200s), and
    records the requests' bodies and how many connections it accepted."""

    def __init__(self, script: list[tuple[int | None, str]] | None = None) -> None:
        self.script = list(script or [])
        self.bodies: list[bytes] = []
        super().__init__()

    def answer(self, conn: socket.socket, head: bytes, rest: bytes) -> bytes | None:
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(rest) < length:
            rest += conn.recv(65536)
        self.bodies.append(rest[:length])
        status, close = self.script.pop(0) if self.script else (200, '')
        if status is None:  # never answers
            threading.Event().wait(5)
            return None
        # close: says so ("Connection: close"); drop: closes without saying (an idle timeout)
        conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\nx-amz-request-id: r1\r\n"
                     f"{'Connection: close' + chr(13) + chr(10) if close == 'close' else ''}\r\nok".encode())
        return None if close else rest[length:]


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def transport(port: int, read_s: float = 5.0) -> PutTransport:
    return PutTransport("127.0.0.1", port, connect_s=2.0, read_s=read_s, backoff_s=0.01)


def put(t: PutTransport, port: int, body: bytes | io.BytesIO, length: int) -> int:
    return t.urlopen("PUT", f"http://127.0.0.1:{port}/bucket/key", body=body,
                     headers={"Host": f"127.0.0.1:{port}", "Content-Length": str(length)}).status


def test_puts_share_one_kept_alive_connection_and_bodies_arrive_whole(server: Server) -> None:
    t = transport(server.port)
    small, big = b"m" * 600, bytes(range(256)) * 4096  # 1 MiB: sent after the head, not in its write
    stream = io.BytesIO(b"skipped" + big)
    stream.seek(7)  # from where the caller left it
    assert [put(t, server.port, small, len(small)), put(t, server.port, stream, len(big)),
            put(t, server.port, big, len(big))] == [200, 200, 200]
    assert server.bodies == [small, big, big]
    assert server.connections == 1


def test_5xx_is_retried_twice_with_the_body_rewound_then_answered() -> None:
    s = Server([(503, ''), (500, '')])
    t = transport(s.port)
    stream = io.BytesIO(b"xxbody")
    stream.seek(2)
    assert put(t, s.port, stream, 4) == 200
    assert s.bodies == [b"body"] * 3
    s.close()
    s = Server([(503, '')] * 3)
    assert put(transport(s.port), s.port, b"body", 4) == 503  # retries spent: the caller sees the answer
    assert len(s.bodies) == 3
    s.close()


def test_a_4xx_is_not_retried() -> None:
    s = Server([(403, '')])
    assert put(transport(s.port), s.port, b"body", 4) == 403
    assert len(s.bodies) == 1
    s.close()


@pytest.mark.parametrize("close", ["close", "drop"])
def test_a_connection_the_server_closed_is_replaced_and_the_request_sent_again(close: str) -> None:
    s = Server([(200, close), (200, close)])  # answers, then closes the connection
    t = transport(s.port)
    assert put(t, s.port, b"one", 3) == 200
    threading.Event().wait(0.05)  # the close has reached the client's idle connection
    assert put(t, s.port, b"two", 3) == 200
    assert put(t, s.port, b"three", 5) == 200
    assert s.bodies == [b"one", b"two", b"three"] and s.connections == 3
    s.close()


def test_a_server_that_does_not_answer_times_out() -> None:
    s = Server([(None, '')] * 3)
    with pytest.raises(TimeoutError):
        put(transport(s.port, read_s=0.2), s.port, b"body", 4)
    s.close()


def test_no_server_is_a_connection_error() -> None:
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with pytest.raises(ConnectionError):
        put(transport(port), port, b"body", 4)


class GetServer(LoopbackServer):
    """Answers every GET with `status` and `body`, sent in 64 KiB pieces; with `cut`, closes the
    connection after that many bytes of the body. Counts the requests."""

    def __init__(self, body: bytes, status: int = 200, cut: int | None = None) -> None:
        self.body, self.status, self.cut = body, status, cut
        self.requests = 0
        super().__init__()

    def answer(self, conn: socket.socket, head: bytes, rest: bytes) -> bytes | None:
        self.requests += 1
        body = self.body if self.cut is None else self.body[:self.cut]
        conn.sendall(f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(self.body)}\r\nETag: \"e1\"\r\n\r\n"
                     .encode())
        for i in range(0, len(body), 65536):
            conn.sendall(body[i:i + 65536])
        return None if self.cut is not None else rest


def get(t: PutTransport, port: int, sink) -> object:
    return t.urlopen("GET", f"http://127.0.0.1:{port}/bucket/key", headers={"Host": f"127.0.0.1:{port}"}, sink=sink)


def test_a_get_hands_its_body_to_the_sink_as_it_arrives_and_keeps_none_of_it() -> None:
    body = bytes(range(256)) * 4096 * 3  # 3 MiB: many pieces
    s = GetServer(body)
    pieces: list[bytes] = []
    answer = get(transport(s.port), s.port, pieces.append)
    assert answer.status == 200 and answer.headers["etag"] == '"e1"' and answer.data == b""
    assert len(pieces) > 1 and b"".join(pieces) == body
    s.close()


def test_an_error_document_is_kept_for_the_caller_not_handed_to_the_sink() -> None:
    s = GetServer(b"<Error><Code>NoSuchKey</Code></Error>", status=404)
    pieces: list[bytes] = []
    answer = get(transport(s.port), s.port, pieces.append)
    assert answer.status == 404 and answer.data == b"<Error><Code>NoSuchKey</Code></Error>" and pieces == []
    s.close()


def test_a_body_broken_off_after_some_was_handed_on_is_an_error_and_not_sent_again() -> None:
    s = GetServer(b"x" * 300_000, cut=100_000)
    pieces: list[bytes] = []
    with pytest.raises(ConnectionError, match="broke off"):
        get(transport(s.port), s.port, pieces.append)
    assert s.requests == 1  # a retry would hand the sink the object's start a second time
    assert 0 < len(b"".join(pieces)) <= 100_000
    s.close()
