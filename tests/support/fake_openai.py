"""A scriptable OpenAI-compatible chat server on loopback, for tests and the LLM benchmark.

It is a real HTTP server (Starlette under uvicorn, in a background thread), so the real
`openai` client is exercised end to end: status codes, headers (`Retry-After`), JSON bodies,
`usage`, and vLLM's extra `reasoning_content` field. A test scripts it per case:

- `latency`: seconds each request takes (the server's "inference time");
- `failures`: a queue of `Failure(status, retry_after)` served before any answer;
- `contents`: a queue of raw content strings (e.g. malformed JSON) served before the responder;
- `responder(request) -> dict`: computes the answer from the request, e.g. by running the
  offline rule extractor on the report in the user message (`rules_extractor_responder`);
- `reasoning` + `reasoning_style`: vLLM reasoning in a separate field or in `<think>` tags.

It counts requests and the peak number handled at once, and keeps every request body.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from services.common.contracts import Certainty, Finding, Laterality
from services.common.protocols.cxr.extract import extract_findings
from services.common.protocols.cxr.lexicon import labels_for
from services.common.taxonomy import load_taxonomy

Responder = Callable[[dict[str, Any]], dict[str, Any]]
_REPORT_RE = re.compile(r"<report>\n(.*)\n</report>", re.DOTALL)
_FINDINGS_RE = re.compile(r"<findings>\n(.*)\n</findings>", re.DOTALL)


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


def pipeline_responder(request: dict[str, Any]) -> dict[str, Any]:
    """Answers the extractor and the mapper alike, told apart by the requested schema's name."""
    name = request.get("response_format", {}).get("json_schema", {}).get("name")
    return lexicon_mapper_responder(request) if name == "cxr_labels" else rules_extractor_responder(request)


class FakeOpenAI:
    """The server; use as a context manager. `base_url` ends in /v1 like the real API."""

    def __init__(self, responder: Responder = rules_extractor_responder, *, latency: float = 0.0,
                 port: int = 0) -> None:
        self.responder = responder
        self.latency = latency
        self.failures: deque[Failure] = deque()
        self.contents: deque[str] = deque()
        self.reasoning: str | None = None
        self.reasoning_style = "reasoning_content"  # or "reasoning", or "think"
        self.requests: list[dict[str, Any]] = []
        self.request_times: list[float] = []
        self.in_flight = 0
        self.peak_concurrency = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = port  # 0: any free port, kept from the first start on (`stop` then `start` is an outage)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def request_count(self) -> int:
        return len(self.requests)

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
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                backlog=4096, timeout_keep_alive=30)
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

    async def _chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append(body)
        self.request_times.append(time.monotonic())
        self.in_flight += 1
        self.peak_concurrency = max(self.peak_concurrency, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            if self.failures:
                return self._failure(self.failures.popleft())
            content = self.contents.popleft() if self.contents else json.dumps(self.responder(body))
            return JSONResponse(self._completion(body, content))
        finally:
            self.in_flight -= 1

    @staticmethod
    def _failure(failure: Failure) -> JSONResponse:
        headers = {"retry-after": failure.retry_after} if failure.retry_after is not None else {}
        kind = "rate_limit_exceeded" if failure.status == 429 else "server_error"
        error = {"error": {"message": f"scripted {failure.status}", "type": kind, "param": None, "code": kind}}
        return JSONResponse(error, status_code=failure.status, headers=headers)

    def _completion(self, request: dict[str, Any], content: str) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": content, "tool_calls": []}
        if self.reasoning is not None and self.reasoning_style == "think":
            message["content"] = f"<think>{self.reasoning}</think>\n\n{content}"
        elif self.reasoning is not None:
            message[self.reasoning_style] = self.reasoning
        prompt_tokens = sum(len(m["content"].split()) for m in request["messages"])
        completion_tokens = len(message["content"].split())
        return {
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
            "model": request["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }
