"""The fake OpenAI server stands in for an inference server whose latency is `latency`: timed from
each request's arrival, never shorter, with the server's own work done inside it. The LLM
benchmark's ratio to C / L rests on this; a server that added its own queue to L made the
client look slower than it is."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tests.support.fake_openai import FakeOpenAI, fixed_responder, user_text

pytestmark = pytest.mark.integration

def request(content: str) -> bytes:
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, content: str = "report") -> float:
    """Send one chat request on an open connection; the time its whole answer has been read."""
    writer.write(request(content))
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = next(int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                  if line.startswith(b"content-length"))
    await reader.readexactly(length)
    return time.monotonic()


def working(seconds: dict[str, float]) -> Any:
    """A responder that holds the server's event loop for `seconds[content]` per request, as CPU
    work does (a blocking sleep, so the figure does not depend on the machine's load)."""
    answer = fixed_responder({"findings": []})

    def respond(request: dict[str, Any]) -> dict[str, Any]:
        time.sleep(seconds[user_text(request)])
        return answer(request)
    return respond


async def test_requests_that_arrive_together_are_answered_together_whatever_the_servers_work():
    latency, work, burst = 0.3, 0.06, 4
    with FakeOpenAI(working({"warm": 0, "gate": 0.15, "report": work}), latency=latency) as server:
        gate = await connect(server.port)
        connections = [await connect(server.port) for _ in range(burst)]
        try:
            # Accepted by the server before the test (a connection it has yet to accept is read a
            # poll later than the others).
            await asyncio.gather(*(ask(r, w, "warm") for r, w in [gate, *connections]))
            gated = asyncio.create_task(ask(*gate, "gate"))
            await asyncio.sleep(0.03)  # the server is in the gate's work: the burst waits, unread, together
            sent = time.monotonic()
            answered = await asyncio.gather(*(ask(r, w) for r, w in connections))
            await gated
        finally:
            for _, writer in [gate, *connections]:
                writer.close()
    # Read together once the gate's work is done (~120 ms after `sent`), then 4 x 60 ms of work
    # one after another on the server's loop: inside the latency, so all are answered at once.
    # Worked after the wait, they would be answered 60 ms apart, the last 180 ms after the first.
    assert max(answered) - min(answered) < work, [t - sent for t in answered]
    assert min(answered) - sent >= latency


async def test_no_answer_comes_before_the_latency_has_passed_since_the_request_arrived():
    latency = 0.03
    with FakeOpenAI(fixed_responder({"findings": []}), latency=latency) as server:
        reader, writer = await connect(server.port)
        took = []
        try:
            for _ in range(30):
                sent = time.monotonic()
                took.append(await ask(reader, writer) - sent)
        finally:
            writer.close()
    assert len(server.observed_latencies) == 30
    assert min(server.observed_latencies) >= latency  # uvloop's millisecond timers can fire early
    assert min(took) >= latency
    assert max(server.observed_latencies) < latency + 0.1  # and not much more (a loaded machine adds some)
