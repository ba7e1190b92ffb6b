"""The simulated panel's kept-alive client (radcurate/keepalive.py, client.ReaderClient) against a
real HTTP/1.1 server on loopback: uvicorn serving a small ASGI app, as the gateway is served."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from radcurate.client import GatewayError, ReaderClient
from radcurate.keepalive import KeepAliveConnection

SEEN: list[dict] = []


async def app(scope: dict, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    SEEN.append({"method": scope["method"], "path": scope["path"], "query": scope["query_string"].decode(),
                 "headers": headers, "body": body, "client": scope["client"]})
    path = scope["path"]
    if path == "/api/v1/reviews/next":
        status, out, extra = 204, b"", []
    elif path.endswith("/vote"):
        if headers.get("authorization") != "Bearer good":
            status, out, extra = 401, json.dumps({"type": "about:blank", "title": "Unauthorized",
                                                   "detail": "unknown token"}).encode(), []
            extra = [(b"content-type", b"application/problem+json")]
        else:
            status, out, extra = 201, json.dumps({"echo": json.loads(body)}).encode(), []
    elif path == "/chunked":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"a": ', "more_body": True})
        await send({"type": "http.response.body", "body": b'[1, 2]}', "more_body": False})
        return
    elif path == "/slow":
        await asyncio.sleep(2)
        status, out, extra = 200, b"{}", []
    else:
        status, out, extra = 200, json.dumps({"path": path}).encode(), []
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(out)).encode()), *extra]})
    await send({"type": "http.response.body", "body": out})


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, uvicorn.Server]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_keep_alive=1)
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve(sockets=[sock]))
    while not srv.started:
        await asyncio.sleep(0.01)
    SEEN.clear()
    yield f"http://127.0.0.1:{port}", srv
    srv.should_exit = True
    await task


async def test_the_review_calls_go_through_one_kept_alive_connection(server):
    url, _ = server
    me = ReaderClient(url, "good")
    try:
        assert await me.next_assignment() is None
        out = await me.vote("a-1", {"verdict": "agree_all", "added_labels": ["x"]}, idempotency_key="k-1")
        assert out == {"echo": {"verdict": "agree_all", "added_labels": ["x"]}}
        series = await me.request("GET", "/api/v1/studies/s-1/series", params={"limit": "5"})
        assert series.json() == {"path": "/api/v1/studies/s-1/series"}
        await me.vote("a-2", {"verdict": "agree_all"}, idempotency_key="k-2", with_next=True)
    finally:
        await me.aclose()
    assert [s["method"] for s in SEEN] == ["GET", "POST", "GET", "POST"]
    assert len({s["client"] for s in SEEN}) == 1  # one connection, kept alive
    vote = SEEN[1]
    assert vote["headers"]["authorization"] == "Bearer good"
    assert vote["headers"]["idempotency-key"] == "k-1"
    assert vote["headers"]["content-type"] == "application/json"
    assert SEEN[2]["query"] == "limit=5"
    assert vote["query"] == ""  # the plain vote: its answer is the vote alone
    assert SEEN[3]["path"] == "/api/v1/reviews/a-2/vote" and SEEN[3]["query"] == "next=true"  # opt-in: with next


async def test_a_refusal_is_a_gateway_error_with_its_problem(server):
    url, _ = server
    me = ReaderClient(url, "bad")
    try:
        with pytest.raises(GatewayError) as caught:
            await me.vote("a-1", {"verdict": "agree_all"})
    finally:
        await me.aclose()
    assert caught.value.status == 401
    assert caught.value.problem["detail"] == "unknown token"


async def test_a_chunked_answer_is_read_whole(server):
    url, _ = server
    conn = KeepAliveConnection(url)
    try:
        assert (await conn.request("GET", "/chunked")).json() == {"a": [1, 2]}
    finally:
        conn.close()


async def test_a_connection_the_server_closed_while_idle_is_replaced(server):
    url, _ = server
    conn = KeepAliveConnection(url)
    try:
        assert (await conn.request("GET", "/one")).status_code == 200
        await asyncio.sleep(1.6)  # past the server's keep-alive timeout: it closes the connection
        assert (await conn.request("GET", "/two")).json() == {"path": "/two"}
    finally:
        conn.close()
    assert [s["path"] for s in SEEN] == ["/one", "/two"]  # sent once each
    assert SEEN[0]["client"] != SEEN[1]["client"]


async def test_no_answer_in_time_is_httpx_read_timeout(server):
    url, _ = server
    conn = KeepAliveConnection(url, timeout=0.3)
    try:
        with pytest.raises(httpx.ReadTimeout):
            await conn.request("GET", "/slow")
        assert (await conn.request("GET", "/after")).json() == {"path": "/after"}  # a fresh connection
    finally:
        conn.close()


async def test_nothing_listening_is_httpx_connect_error():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    conn = KeepAliveConnection(f"http://127.0.0.1:{port}")
    with pytest.raises(httpx.ConnectError):
        await conn.request("GET", "/")


def test_only_plain_http_is_spoken():
    with pytest.raises(ValueError, match="plain http"):
        KeepAliveConnection("https://example.org")
