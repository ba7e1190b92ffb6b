"""A scriptable OpenAI-compatible chat server on loopback, for tests and the LLM benchmark.

It is a real HTTP server (uvicorn, in a background thread), so the real `openai` client is
exercised end to end: status codes, headers (`Retry-After`), JSON bodies, `usage`, and vLLM's
extra `reasoning_content` field. It is one bare ASGI callable rather than a web framework's app:
the LLM benchmark runs it on the same two cores as the client at 640 requests/s, where
Starlette's routing and middleware layers cost ~0.25 ms of CPU per request, as much as the rest
of the server together. A test scripts it per case:

- `latency`: seconds each request takes (the server's "inference time"), timed from its arrival
  and never shorter; the server's own work (reading, answering, encoding) is done inside it, as an
  inference server's CPU work overlaps its GPU's, so its queue is not added to the latency;
- `failures`: a queue of `Failure(status, retry_after)` served before any answer;
- `contents`: a queue of raw content strings (e.g. malformed JSON) served before the responder;
- `responder(request) -> dict`: computes the answer from the request, e.g. by running the
  offline rule extractor on the report in the user message (`rules_extractor_responder`), or
  answers the same to every request (`fixed_responder`);
- `reasoning` + `reasoning_style`: vLLM reasoning in a separate field or in `<think>` tags.

It counts requests and the peak number handled at once, records each chat request's observed
latency (`observed_latencies`: arrival to answer sent), keeps the first `keep_requests` request
bodies and arrival times (a test inspects a few; keeping all of them grew the server's heap by
every request of a long run, and with it the garbage collector's walks), and records the client
address of each request (`connections`: how many connections the client opened) and the latest
request's headers.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import socket
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn

from services.common.contracts import Certainty, Finding, Laterality
from services.common.protocols.cxr.extract import extract_findings
from services.common.protocols.cxr.lexicon import labels_for
from services.common.taxonomy import load_taxonomy

Responder = Callable[[dict[str, Any]], dict[str, Any]]
_REPORT_RE = re.compile(r"<report>\n(.*)\n</report>", re.DOTALL)
_FINDINGS_RE = re.compile(r"<findings>\n(.*)\n</findings>", re.DOTALL)
_PATH = "/v1/chat/completions"
Reply = tuple[int, dict[str, Any], dict[str, str]]  # status, JSON body, extra headers


@dataclass(frozen=True)
class Failure:
    """One scripted error response."""

    status: int = 500
    retry_after: str | None = None  # header value: seconds, or an HTTP date


def user_text(request: dict[str, Any]) -> str:
    """The first user message: where both backends put their data."""
    return next(m["content"] for m in request["messages"] if m["role"] == "user")


def rules_extractor_responder(request: dict[str, Any]) -> dict[str, Any]:
    """A realistic extraction: the offline rules run on the report found in the request."""
    report = _REPORT_RE.search(user_text(request)).group(1)  # type: ignore[union-attr]
    findings = extract_findings(report, load_taxonomy("cxr"))
    return {"findings": [
        {"text": f.text, "certainty": f.certainty.value, "laterality": f.laterality.value, "evidence": f.evidence}
        for f in findings
    ]}


def lexicon_mapper_responder(request: dict[str, Any]) -> dict[str, Any]:
    """A realistic mapping: the offline lexicon runs on the findings found in the request."""
    items = json.loads(_FINDINGS_RE.search(user_text(request)).group(1))  # type: ignore[union-attr]
    taxonomy, cited = load_taxonomy("cxr"), {}
    for item in items:
        finding = Finding(text=item["text"], certainty=Certainty(item["certainty"]),
                          laterality=Laterality(item["laterality"]), evidence=item["evidence"])
        for label_id in labels_for(finding, taxonomy):
            cited.setdefault(label_id, []).append(item)
    return {"labels": [
        {"label_id": label_id, "findings": [i["index"] for i in support], "confidence": 0.9,
         "uncertain": all(i["certainty"] == "uncertain" for i in support)}
        for label_id, support in cited.items()
    ]}


def fixed_responder(answer: dict[str, Any]) -> Responder:
    """The same answer to every request: a model whose inference costs this machine nothing, for
    the LLM benchmark, where the rules responder's ~0.2 ms per request would be CPU that a real
    model spends on its own GPU, not on the client's cores."""
    return lambda _request: answer


def pipeline_responder(request: dict[str, Any]) -> dict[str, Any]:
    """Answers the extractor and the mapper alike, told apart by the requested schema's name."""
    name = request.get("response_format", {}).get("json_schema", {}).get("name")
    return lexicon_mapper_responder(request) if name == "cxr_labels" else rules_extractor_responder(request)


class FakeOpenAI:
    """The server; use as a context manager. `base_url` ends in /v1 like the real API."""

    def __init__(self, responder: Responder = rules_extractor_responder, *, latency: float = 0.0,
                 port: int = 0, keep_requests: int = 1000) -> None:
        self.responder = responder
        self.latency = latency
        self.failures: deque[Failure] = deque()
        self.contents: deque[str] = deque()
        self.reasoning: str | None = None
        self.reasoning_style = "reasoning_content"  # or "reasoning", or "think"
        self.keep_requests = keep_requests
        self.requests: list[dict[str, Any]] = []  # the first `keep_requests` bodies, in arrival order
        self.request_times: list[float] = []  # their arrival times (time.monotonic())
        self.request_count = 0  # every chat request, kept or not
        self.in_flight = 0
        self.peak_concurrency = 0
        # Seconds from each chat request's arrival to its answer sent, every one (8 bytes each,
        # outside the garbage collector's walks): at least `latency`, and the rest is this server's.
        self.observed_latencies = array("d")
        self.connections: set[tuple[str, int]] = set()  # client (host, port) of every request
        self.last_headers: dict[str, str] = {}  # the latest request's headers, names in lower case
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = port  # 0: any free port, kept from the first start on (`stop` then `start` is an outage)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Listen (again) on `port`: after `stop`, clients find the endpoint where it was."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app, interface="asgi3", log_level="warning", access_log=False, lifespan="off",
                                backlog=4096, timeout_keep_alive=30, proxy_headers=False,
                                server_header=False, date_header=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop listening: new connections are refused, as by an inference server that restarts."""
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(timeout=10)

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The ASGI entry point: one route, JSON in and out, OpenAI-shaped errors."""
        # The request's arrival, from which `latency` is timed: an inference server's latency runs
        # from when the request reaches it, and its own work (reading, answering, encoding) happens
        # inside that time, as its GPU's does. Yielding once before any work lets every request read
        # with this one be stamped first; otherwise a burst of C requests would each be stamped after
        # the work of the ones ahead of it (the last ~C x 0.1 ms late in the benchmark), adding the
        # server's own queue to L. A request read while others are worked on still waits for that
        # work: a pass's worth, ~0.1 ms per request here.
        arrived = time.monotonic()
        await asyncio.sleep(0)
        if scope.get("client"):
            self.connections.add(tuple(scope["client"]))
        self.last_headers = {name.decode(): value.decode() for name, value in scope["headers"]}
        chat = False
        if scope["path"] != _PATH:
            status, payload, headers = _error(404, "invalid_request_error", f"no route {scope['path']}")
        elif scope["method"] != "POST":
            status, payload, headers = _error(405, "invalid_request_error", f"{scope['method']} not allowed")
        else:
            chunks = []
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            try:
                body = json.loads(b"".join(chunks))
            except ValueError as exc:
                status, payload, headers = _error(400, "invalid_request_error", f"body is not JSON: {exc}")
            else:
                chat = True
                status, encoded, headers = await self._chat(body, arrived)
        if not chat:
            encoded = _encode(payload)
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(encoded)).encode()),
            *((name.encode(), value.encode()) for name, value in headers.items()),
        ]})
        await send({"type": "http.response.body", "body": encoded})
        if chat:
            self.observed_latencies.append(time.monotonic() - arrived)

    async def _chat(self, body: dict[str, Any], arrived: float) -> tuple[int, bytes, dict[str, str]]:
        """The answer, computed at once and held back until `latency` has passed since `arrived`."""
        self.request_count += 1
        if len(self.requests) < self.keep_requests:
            self.requests.append(body)
            self.request_times.append(arrived)
        self.in_flight += 1
        self.peak_concurrency = max(self.peak_concurrency, self.in_flight)
        try:
            if self.failures:
                status, payload, headers = self._failure(self.failures.popleft())
            else:
                content = self.contents.popleft() if self.contents else json.dumps(self.responder(body))
                status, payload, headers = 200, self._completion(body, content), {}
            encoded = _encode(payload)
            await _until(arrived + self.latency)
            return status, encoded, headers
        finally:
            self.in_flight -= 1

    @staticmethod
    def _failure(failure: Failure) -> Reply:
        headers = {"retry-after": failure.retry_after} if failure.retry_after is not None else {}
        kind = "rate_limit_exceeded" if failure.status == 429 else "server_error"
        return failure.status, _error(failure.status, kind, f"scripted {failure.status}")[1], headers

    def _completion(self, request: dict[str, Any], content: str) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": content, "tool_calls": []}
        if self.reasoning is not None and self.reasoning_style == "think":
            message["content"] = f"<think>{self.reasoning}</think>\n\n{content}"
        elif self.reasoning is not None:
            message[self.reasoning_style] = self.reasoning
        prompt_tokens = sum(_words(m["content"]) for m in request["messages"])
        completion_tokens = len(message["content"].split())
        return {
            "id": f"chatcmpl-{self.request_count}", "object": "chat.completion", "created": int(time.time()),
            "model": request["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }


@functools.lru_cache(maxsize=64)
def _words(text: str) -> int:
    """A message's "tokens": its words. The system prompt is the same ~2 KB on every request, and
    splitting it again each time was ~4 % of this server's CPU in the LLM benchmark."""
    return len(text.split())


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


async def _until(deadline: float) -> None:
    """Sleep until `time.monotonic()` reaches `deadline`, never less, with one timer. uvloop's
    timers count whole milliseconds (the delay rounded) from its clock read in whole milliseconds,
    so a timer set for the exact delay can fire up to ~1.5 ms early: set 1.5 ms late, it fires
    on time or up to ~1.5 ms late (~1 ms on average). The loop is only a guard."""
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(left + 0.0015)


def _error(status: int, kind: str, message: str) -> Reply:
    """An error in the OpenAI API's shape, which the openai client reads into its exception."""
    return status, {"error": {"message": message, "type": kind, "param": None, "code": kind}}, {}
