"""The LLM client's HTTP/1.1 transport (services.common.http1) on real loopback sockets: kept-alive
connections within the pool bound, timeouts and refused connections as the openai client's own
errors, a restarted server reached again, and the response framings an HTTP server may use."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator

import httpx2
import openai
import pytest

from services.common.http1 import Http1Transport
from services.common.llm import (
    DirectHttpClient,
    LlmClient,
    LlmConfig,
    LlmUnavailable,
    MemoryLlmCache,
    connection_limits,
)
from services.extractor.llm import LlmExtractor
from tests.support.fake_openai import FakeOpenAI, fixed_responder

pytestmark = pytest.mark.integration


def client_for(base_url: str, *, concurrency: int = 4, timeout_s: float = 10.0, max_attempts: int = 4) -> LlmClient:
    config = LlmConfig(service="test", model="gpt-4o", base_url=base_url, api_key="test-key",
                       concurrency=concurrency, timeout_s=timeout_s, max_attempts=max_attempts,
                       backoff_base_s=0.05, backoff_max_s=0.2)
    return LlmClient(config, MemoryLlmCache())


async def test_calls_reuse_kept_alive_connections_and_never_open_more_than_the_bound():
    with FakeOpenAI(latency=0.02) as server:
        client = client_for(server.base_url, concurrency=4)
        extractor = LlmExtractor(client)
        try:
            await asyncio.gather(*(extractor.extract(f"Study {i}. Cardiomegaly.") for i in range(60)))
        finally:
            await client.aclose()
    assert server.request_count == 60
    assert 1 <= len(server.connections) <= 4


async def test_a_freed_slot_sends_the_next_request_before_the_answer_that_freed_it_is_validated():
    """At C = 128 a round's answers arrive together: a waiting call's request must leave as soon
    as a slot frees, not after the reading and validation of every answer that arrived with it."""
    events: list[str] = []
    with FakeOpenAI(fixed_responder({}), latency=0.01) as server:
        client = client_for(server.base_url, concurrency=1)
        transport = client._openai._client._transport
        send = transport.send

        async def spy(origin, head, body, *args, **kwargs):
            events.append(f"sent {json.loads(body)['messages'][1]['content']}")
            return await send(origin, head, body, *args, **kwargs)

        transport.send = spy

        async def ask(name: str) -> None:
            def validate(data: dict, _reply: object) -> None:
                events.append(f"validated {name}")

            await client.complete_json([{"role": "system", "content": "s"}, {"role": "user", "content": name}],
                                       schema_name="any", schema={"type": "object"}, validate=validate)
        try:
            await ask("warm-up")  # the route to the server is found on the first call
            events.clear()
            await asyncio.gather(ask("a"), ask("b"), ask("c"))
        finally:
            await client.aclose()
    assert events == ["sent a", "sent b", "validated a", "sent c", "validated b", "validated c"]


async def test_a_schema_changed_between_calls_is_sent_as_it_now_is():
    """The encoded response format is kept per schema name: a schema changed in place, or another
    under the same name, is still sent as it is at the call."""
    schema: dict = {"type": "object", "properties": {"a": {"type": "string"}}}
    with FakeOpenAI(fixed_responder({})) as server:
        client = client_for(server.base_url)
        try:
            for _ in range(2):
                await client.complete([{"role": "user", "content": "x"}], schema_name="s", schema=schema)
                schema["properties"]["b"] = {"type": "integer"}
            await client.complete([{"role": "user", "content": "x"}], schema_name="s", schema={"type": "array"})
        finally:
            await client.aclose()
    sent = [request["response_format"]["json_schema"]["schema"] for request in server.requests]
    assert sent == [{"type": "object", "properties": {"a": {"type": "string"}}},
                    {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}},
                    {"type": "array"}]


async def test_a_call_carries_auth_and_json_headers_and_none_of_the_sdks_analytics():
    with FakeOpenAI() as server:
        client = client_for(server.base_url)
        try:
            await LlmExtractor(client).extract("Cardiomegaly.")
        finally:
            await client.aclose()
    headers = server.last_headers
    assert headers["authorization"] == "Bearer test-key"
    assert headers["content-type"] == "application/json" and headers["accept"] == "application/json"
    assert int(headers["content-length"]) == len(json.dumps(server.requests[0], ensure_ascii=False,
                                                            separators=(",", ":")).encode())
    assert not [name for name in headers if name.startswith("x-stainless")]


async def test_a_server_that_does_not_answer_in_time_is_the_openai_timeout_error():
    with FakeOpenAI(latency=0.8) as server:
        client = client_for(server.base_url, timeout_s=0.3, max_attempts=1)
        try:
            with pytest.raises(LlmUnavailable) as raised:
                await LlmExtractor(client).extract("Cardiomegaly.")
        finally:
            await client.aclose()
    assert isinstance(raised.value.__cause__, openai.APITimeoutError)


async def test_no_server_listening_is_the_openai_connection_error():
    with FakeOpenAI() as server:
        base_url = server.base_url  # a port that was just free and now refuses connections
    client = client_for(base_url, max_attempts=2)
    try:
        with pytest.raises(LlmUnavailable) as raised:
            await LlmExtractor(client).extract("Cardiomegaly.")
    finally:
        await client.aclose()
    assert type(raised.value.__cause__) is openai.APIConnectionError


async def test_a_restarted_server_is_reached_again_on_new_connections():
    server = FakeOpenAI()
    server.start()
    client = client_for(server.base_url)
    extractor = LlmExtractor(client)
    try:
        assert await extractor.extract("Study 1. Cardiomegaly.")
        server.stop()  # closes the kept-alive connection the pool holds
        server.start()
        assert await extractor.extract("Study 2. Cardiomegaly.")
    finally:
        await client.aclose()
        server.stop()
    assert server.request_count >= 2


# --- response framings, from a bare socket server ------------------------------------------

ANSWER = {"ok": True, "text": "x" * 3000}
BODY = json.dumps(ANSWER).encode()


def chunked(body: bytes) -> bytes:
    middle = len(body) // 2
    parts = [body[:middle], body[middle:]]
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


FRAMINGS = {
    "content-length": (b"Content-Length: %d\r\n" % len(BODY), BODY, False),
    "chunked": (b"Transfer-Encoding: chunked\r\n", chunked(BODY), False),
    "until close": (b"Connection: close\r\n", BODY, True),
    "gzip": (b"Content-Encoding: gzip\r\nContent-Length: %d\r\n" % len(gzip.compress(BODY)),
             gzip.compress(BODY), False),
}


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """Read one request off the socket (its body skipped by Content-Length); returns its head."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    await reader.readexactly(length)
    return head


@pytest.fixture
async def framed_server(request) -> AsyncIterator[tuple[str, list[int], bool]]:
    """A socket server answering every request with one framing; yields its URL, the number of
    requests seen per connection, and whether it closes the connection after each answer."""
    extra_headers, payload, close_after = FRAMINGS[request.param]
    per_connection: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        per_connection.append(0)
        try:
            while True:
                await read_request(reader)
                per_connection[-1] += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra_headers + b"\r\n"
                             + payload)
                await writer.drain()
                if close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", per_connection, close_after


@pytest.mark.parametrize("client_class", [httpx2.AsyncClient, DirectHttpClient])
@pytest.mark.parametrize("framed_server", list(FRAMINGS), indirect=True)
async def test_every_response_framing_is_read_whole(framed_server, client_class):
    url, per_connection, close_after = framed_server
    async with client_class(transport=Http1Transport(connection_limits(2))) as client:
        for _ in range(3):
            response = await client.post(f"{url}/v1/chat/completions", json={"model": "m"})
            assert response.status_code == 200 and response.json() == ANSWER
    assert sum(per_connection) == 3
    assert len(per_connection) == (3 if close_after else 1)  # kept alive unless the server closes it


async def test_a_redirected_call_is_followed_as_httpx2_follows_it():
    """The direct send hands a redirect back to httpx2's own path, which follows it."""
    completion = json.dumps({"choices": [{"message": {"role": "assistant", "content": '{"ok": 1}'}}],
                             "usage": {"prompt_tokens": 3, "completion_tokens": 2}}).encode()
    paths: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await read_request(reader)
                path = head.split(b" ")[1]
                paths.append(path)
                if path == b"/v1/chat/completions":
                    writer.write(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /v2/chat/completions\r\n"
                                 b"Content-Length: 0\r\n\r\n")
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(completion), completion))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        client = client_for(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1")
        try:
            reply = await client.complete([{"role": "user", "content": "Cardiomegaly."}], schema_name="s",
                                          schema={"type": "object"})
        finally:
            await client.aclose()
    assert (reply.content, reply.prompt_tokens) == ('{"ok": 1}', 3)
    assert paths[-2:] == [b"/v1/chat/completions", b"/v2/chat/completions"]


# --- the direct route: the openai client's own request, sent straight to the transport ------


@pytest.fixture
async def scripted_server() -> AsyncIterator[tuple[str, list[bytes], list[bytes]]]:
    """A socket server answering with the raw responses appended to its `answers` list, in turn
    (the last one again when they run out); yields its /v1 URL, the requests it read (head and
    body, as sent) and the answers."""
    seen: list[bytes] = []
    answers: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                seen.append(head + await reader.readexactly(length))
                writer.write(answers[min(len(seen), len(answers)) - 1])
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1", seen, answers


def http_answer(status: str, body: bytes, *headers: bytes) -> bytes:
    return b"HTTP/1.1 %s\r\n%sContent-Length: %d\r\n\r\n%s" % (
        status.encode(), b"".join(header + b"\r\n" for header in headers), len(body), body)


COMPLETION = json.dumps({"choices": [{"message": {"role": "assistant", "content": '{"ok": 1}'}}],
                         "usage": {"prompt_tokens": 3, "completion_tokens": 2}}).encode()
JSON_TYPE = b"Content-Type: application/json"


def openai_way_only(client: LlmClient) -> LlmClient:
    """The client with its direct route turned off: every call goes the openai client's whole way."""
    client._route, client._route_found = None, True
    return client


async def test_the_direct_route_sends_the_openai_clients_own_request_byte_for_byte(scripted_server, monkeypatch):
    url, seen, answers = scripted_server
    answers.append(http_answer("200 OK", COMPLETION, JSON_TYPE))
    monkeypatch.setenv("OPENAI_ORG_ID", "org-test")  # headers the openai client adds are sent as it adds them
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-test")
    direct, whole_way = client_for(url), openai_way_only(client_for(url))
    conversation = [{"role": "user", "content": "Small left effusion."}]
    try:
        for client in (direct, whole_way, direct):
            reply = await client.complete(conversation, schema_name="s", schema={"type": "object"})
            assert (reply.content, reply.prompt_tokens, reply.completion_tokens) == ('{"ok": 1}', 3, 2)
        assert direct._route is not None  # the direct route was taken
    finally:
        await direct.aclose()
        await whole_way.aclose()
    assert seen[0] == seen[1] == seen[2]
    assert b"\r\nopenai-organization: org-test\r\n" in seen[0] and b"\r\nopenai-project: proj-test\r\n" in seen[0]


async def test_a_header_that_changes_per_call_keeps_the_calls_on_the_openai_clients_way(scripted_server):
    """A request the openai client would build differently each time (here: an idempotency key,
    which this SDK does not send) is never replayed: every call goes its whole way."""
    url, seen, answers = scripted_server
    answers.append(http_answer("200 OK", COMPLETION, JSON_TYPE))
    client = client_for(url)
    client._openai._idempotency_header = "Idempotency-Key"
    try:
        for _ in range(2):
            await client.complete([{"role": "user", "content": "x"}], schema_name="s", schema={"type": "object"})
    finally:
        await client.aclose()
    assert client._route is None
    keys = [line for request in seen for line in request.split(b"\r\n") if line.lower().startswith(b"idempotency-key:")]
    assert len(keys) == 2 and keys[0] != keys[1]


async def test_an_sdk_whose_request_cannot_be_built_ahead_still_gets_every_call_through(scripted_server,
                                                                                        monkeypatch):
    url, seen, answers = scripted_server
    answers.append(http_answer("200 OK", COMPLETION, JSON_TYPE))
    client = client_for(url)
    built = []

    def build_on_the_calls_way_only(options, **kwargs):  # as if the SDK's steps had changed
        if options.idempotency_key.startswith("radcurate-probe-"):
            raise TypeError("an SDK whose steps differ")
        built.append(options)
        return type(client._openai)._build_request(client._openai, options, **kwargs)

    monkeypatch.setattr(client._openai, "_build_request", build_on_the_calls_way_only)
    try:
        for _ in range(2):
            reply = await client.complete([{"role": "user", "content": "x"}], schema_name="s",
                                          schema={"type": "object"})
            assert reply.content == '{"ok": 1}'
    finally:
        await client.aclose()
    assert client._route is None and len(built) == len(seen) == 2


ERRORS = {
    "400 with the API's message": http_answer("400 Bad Request", b'{"error": {"message": "bad schema"}}', JSON_TYPE),
    "401": http_answer("401 Unauthorized", b'{"error": {"message": "no key"}}', JSON_TYPE),
    "429 with Retry-After": http_answer("429 Too Many Requests", b'{"error": {"message": "slow down"}}',
                                        JSON_TYPE, b"Retry-After: 7"),
    "503 as text": http_answer("503 Service Unavailable", b"overloaded", b"Content-Type: text/plain"),
}


@pytest.mark.parametrize("answer", list(ERRORS))
async def test_a_status_error_on_the_direct_route_is_the_openai_clients_own(scripted_server, answer):
    url, _, answers = scripted_server
    answers.append(ERRORS[answer])
    raised = []
    for client in (client_for(url), openai_way_only(client_for(url))):
        try:
            with pytest.raises(openai.APIStatusError) as error:
                await client._post(b'{"model": "m"}')
        finally:
            await client.aclose()
        raised.append(error.value)
    direct, whole_way = raised
    assert type(direct) is type(whole_way) and str(direct) == str(whole_way)
    assert (direct.status_code, direct.body) == (whole_way.status_code, whole_way.body)
    assert direct.response.headers.get("retry-after") == whole_way.response.headers.get("retry-after")
    assert (direct.request.url, direct.request.headers) == (whole_way.request.url, whole_way.request.headers)


UTF8_ANSWER = {"text": "\u2264 5 mm, \u00e9panchement"}
ANSWERS = {  # name: (the raw answer, what the openai client reads from it)
    **{name: (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra + b"\r\n" + payload, ANSWER)
       for name, (extra, payload, close_after) in FRAMINGS.items() if not close_after},
    "utf-8 json with a charset": (http_answer("200 OK", json.dumps(UTF8_ANSWER, ensure_ascii=False).encode(),
                                              b"Content-Type: application/json; charset=utf-8"), UTF8_ANSWER),
    "not json": (http_answer("200 OK", b"<html>maintenance</html>", b"Content-Type: text/html"),
                 "<html>maintenance</html>"),
}


@pytest.mark.parametrize("answer", list(ANSWERS))
async def test_an_answer_on_the_direct_route_is_read_as_the_openai_client_reads_it(scripted_server, answer):
    url, _, answers = scripted_server
    raw, expected = ANSWERS[answer]
    answers.append(raw)
    read = []
    for client in (client_for(url), openai_way_only(client_for(url))):
        try:
            read.append(await client._post(b'{"model": "m"}'))
        finally:
            await client.aclose()
    assert read[0] == read[1] == expected
