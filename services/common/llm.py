"""The one LLM client layer: every OpenAI-compatible call (GPT-4o, vLLM) goes through here.

Why one layer: the extractor and the mapper need the same things around a chat completion —
bounded concurrency so a Kafka batch cannot flood the server, retries that honour `Retry-After`
(the OpenAI API and vLLM both shed load with 429/5xx), structured JSON output with exactly one
corrective retry, reasoning kept apart from the answer, a cache that makes re-runs free, and the
shared metrics. The openai client's own retries are off (`max_retries=0`) so that this policy is
the only one and every attempt is counted.

Structured output is requested with `response_format={"type": "json_schema", ...}` only. The
OpenAI API and vLLM's OpenAI-compatible server (>= 0.6) both accept it; vLLM's `guided_json`
extra parameter was deprecated and later removed, so it is not sent. The answer is validated
here regardless, because a server may ignore the schema.
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import functools
import hashlib
import itertools
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import httpx2
import openai
from openai._models import FinalRequestOptions
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from services.common import metrics, phi
from services.common.failures import PermanentError, TransientError
from services.common.http1 import Answer, Http1Transport, Origin, origin_of

log = logging.getLogger(__name__)

BACKEND = "llm"  # the `backend` metric label and provenance value of every LLM backend
OPENAI_BASE_URL = "https://api.openai.com/v1"
_RETRYABLE_STATUS = frozenset({408, 409, 429})
_INPUT_REJECTED_STATUS = frozenset({400, 413, 422})  # this input will never be accepted
_ERROR_PREVIEW = 1_000  # characters of a validation error fed back to the model
# `chat.completions.create` first walks every message and schema key against its typed params
# (~0.3 ms of client CPU per call, a sixth of the layer's cost) to rename aliased fields, and our
# body has none: it is posted as is through the same client (auth, timeout, errors, parsing),
# already encoded (`request_body`) and sent as the raw content.
_BEARER_AUTH = {"bearer_auth": True}
# The openai SDK's analytics headers (its language, version, OS, architecture, Python runtime, and
# per request the retry count and read timeout) are not sent: no server needs them, a clinical
# deployment has no reason to describe its hosts to a remote API, and building them was ~40% of
# the openai client's work per request (httpx2 normalises every header several times).
_NO_SDK_TELEMETRY: dict[str, openai.Omit] = {name: openai.Omit() for name in (
    "X-Stainless-Lang", "X-Stainless-Package-Version", "X-Stainless-OS", "X-Stainless-Arch",
    "X-Stainless-Runtime", "X-Stainless-Runtime-Version", "X-Stainless-Async",
    "X-Stainless-Retry-Count", "X-Stainless-Read-Timeout",
)}
_THINK_RE = re.compile(r"^\s*(?:<think>)?(?P<reasoning>.*?)</think>\s*", re.DOTALL)
_FENCE_RE = re.compile(r"^\s*```(?:json)?\s*(?P<body>.*?)\s*```\s*$", re.DOTALL)

T = TypeVar("T")
Message = Mapping[str, str]


@dataclass(frozen=True)
class LlmConfig:
    """Where the model is and how hard to push it; built from a service's settings."""

    service: str
    model: str
    base_url: str | None = None
    api_key: str | None = None
    concurrency: int = 32
    timeout_s: float = 60.0
    max_attempts: int = 4  # HTTP attempts per completion, first one included
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0
    retry_after_max_s: float = 60.0  # a longer Retry-After is capped, not obeyed blindly


def connection_limits(concurrency: int) -> httpx2.Limits:
    """An HTTP pool that keeps one open connection per concurrent call.

    The openai client's default pool keeps at most 100 idle connections: above that concurrency
    every call past the hundredth closes its connection and the next one opens a new TCP
    connection, which costs more client CPU than the call itself (at 128 calls in flight the
    LLM path fell to 0.27 x C/L). The semaphore already bounds the calls in flight, so the pool
    needs exactly that many connections, all kept alive.
    """
    if concurrency < 1:
        raise ValueError(f"LLM concurrency must be at least 1, not {concurrency}")
    return httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)


def config_from_settings(service: str, settings: Any) -> LlmConfig:
    """An LlmConfig from a service's `llm_*` settings fields (extractor and mapper share them).

    Without a base URL the calls go to the OpenAI API, which needs a real key: refuse to start
    rather than fail on every study. A local server (vLLM) is given a placeholder key.
    """
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key is not None else None
    if settings.llm_base_url is None and not key:
        raise ValueError(f"{service}: the OpenAI API needs llm_api_key (or set llm_base_url)")
    return LlmConfig(
        service=service, model=settings.llm_model, base_url=settings.llm_base_url, api_key=key or "EMPTY",
        concurrency=settings.llm_concurrency, timeout_s=settings.llm_timeout_seconds,
        max_attempts=settings.llm_max_attempts,
    )


@dataclass(frozen=True)
class LlmReply:
    """One completion: the answer text with any reasoning split off, and token usage."""

    content: str
    reasoning: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class LlmUnavailable(TransientError):
    """The server kept failing for every attempt: transient, so the caller may try again later."""


# --- cache --------------------------------------------------------------------------------


class LlmCache(Protocol):
    """Validated answers by cache key, so a re-run over the same inputs makes no HTTP call."""

    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def put(self, key: str, value: dict[str, Any]) -> None: ...


class MemoryLlmCache:
    """A process-local cache for the CLI and tests."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}

    async def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    async def put(self, key: str, value: dict[str, Any]) -> None:
        self.entries.setdefault(key, value)


class PostgresLlmCache:
    """The service's `llm_cache` table (search_path = the service schema, dict rows)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def get(self, key: str) -> dict[str, Any] | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT response FROM llm_cache WHERE cache_key = %s", (key,))
            row = await cur.fetchone()
        return None if row is None else row["response"]

    async def put(self, key: str, value: dict[str, Any]) -> None:
        """First writer wins: concurrent consumers computing the same key store one answer."""
        async with self._pool.connection() as conn:  # the pool commits when the block ends
            await conn.execute(
                "INSERT INTO llm_cache (cache_key, response) VALUES (%s, %s) ON CONFLICT (cache_key) DO NOTHING",
                (key, Jsonb(value)),
            )


def cache_key(model: str, prompt_version: str, payload: Any) -> str:
    """sha256 of (backend, model, prompt version, sha256 of the canonical input)."""
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    input_hash = hashlib.sha256(canonical.encode()).hexdigest()
    return hashlib.sha256(f"{BACKEND}\0{model}\0{prompt_version}\0{input_hash}".encode()).hexdigest()


# --- retry policy -------------------------------------------------------------------------


def parse_retry_after(headers: Mapping[str, str] | None, now: datetime | None = None) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, `Retry-After` seconds or HTTP date."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def is_retryable(exc: BaseException) -> bool:
    """Rate limits, server errors, timeouts and broken connections may succeed on a later try."""
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRYABLE_STATUS or exc.status_code >= 500
    return False


def retry_delay(exc: BaseException, attempt: int, config: LlmConfig) -> float:
    """Retry-After when the server sent one, else exponential backoff with full jitter."""
    response = getattr(exc, "response", None)
    asked = parse_retry_after(response.headers if response is not None else None)
    if asked is not None:
        return min(asked, config.retry_after_max_s)
    ceiling = min(config.backoff_max_s, config.backoff_base_s * 2 ** (attempt - 1))
    return random.uniform(0, ceiling)


# --- output parsing -----------------------------------------------------------------------


def split_reasoning(message: Any) -> tuple[str, str | None]:
    """(answer, reasoning) from a chat message, however the server returned the reasoning.

    vLLM with a reasoning parser puts it in a `reasoning_content` (newer: `reasoning`) field,
    which the openai client keeps as an extra attribute; without a parser a reasoning model
    writes `<think>...</think>` before the answer (the opening tag may sit in the prompt).
    `message` is the message's JSON object as the server sent it, or the openai client's model.
    """
    if isinstance(message, Mapping):
        extra, content = message, message.get("content") or ""
    else:
        extra, content = getattr(message, "model_extra", None) or {}, message.content or ""
    reasoning = extra.get("reasoning_content") or extra.get("reasoning") or getattr(message, "reasoning_content", None)
    think = _THINK_RE.match(content) if "</think>" in content else None
    if think:
        reasoning = "\n".join(part for part in (reasoning, think.group("reasoning").strip()) if part)
        content = content[think.end():]
    return content.strip(), (reasoning or None)


def parse_json_object(content: str) -> dict[str, Any]:
    """The JSON object a model answered with (a Markdown code fence around it is tolerated)."""
    fenced = _FENCE_RE.match(content)
    try:
        value = json.loads(fenced.group("body") if fenced else content)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the answer is not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(value, dict):
        raise ValueError("the answer must be a JSON object")
    return value


# JSON as the openai client encodes a body (UTF-8, compact, no NaN). One encoder for every call:
# `json.dumps` with options builds a new one each time (~0.8 us of the ~2 it takes for a message).
_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


@functools.lru_cache(maxsize=16)
def _system_message_json(content: str) -> str:
    """A system prompt's message, encoded once: the prompt is the same ~2 KB on every call and
    encoding it was a tenth of the client's CPU per call."""
    return _json({"role": "system", "content": content})


def _message_json(message: Message) -> str:
    if message.get("role") == "system" and len(message) == 2:
        return _system_message_json(message["content"])
    return _json(message)


def request_body(model: str, messages: Sequence[Message], response_format: dict[str, Any] | str) -> bytes:
    """The chat completion request's JSON body, as `json.dumps` of the same dict would write it
    (`response_format` may be given already encoded)."""
    encoded = ",".join(map(_message_json, messages))
    if not isinstance(response_format, str):
        response_format = _json(response_format)
    return (f'{{"model":{_json(model)},"messages":[{encoded}],'
            f'"response_format":{response_format},"temperature":0}}').encode()


def json_schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The `response_format` that asks for strict JSON-schema output (OpenAI API and vLLM)."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


# --- the client ---------------------------------------------------------------------------


class DirectHttpClient(openai.DefaultAsyncHttpxClient):
    """The openai client's httpx2 client, handing a plain request straight to its transport.

    httpx2's `send` runs every request through its auth flow, redirect loop, cookie jar, a
    stream wrapper timing the body and an INFO log line: ~10% of the LLM client's CPU per
    call at C = 128 (bench/bench_llm.py), none of which a chat completion uses (openai puts the key in a header and
    an inference server sets no cookies). What could use them still goes httpx2's whole way: a
    request for another transport (a proxy from the environment), a client or call with its
    own auth, and a redirect (sent again through httpx2, which follows it as before).
    """

    async def send(self, request: httpx2.Request, *, stream: bool = False,
                   auth: httpx2.Auth | httpx2._client.UseClientDefault | None = httpx2.USE_CLIENT_DEFAULT,
                   follow_redirects: bool | httpx2._client.UseClientDefault = httpx2.USE_CLIENT_DEFAULT,
                   ) -> httpx2.Response:
        transport = self._transport_for_url(request.url)
        if (self.is_closed or transport is not self._transport or self.auth is not None
                or auth is not httpx2.USE_CLIENT_DEFAULT):
            return await super().send(request, stream=stream, auth=auth, follow_redirects=follow_redirects)
        response = await transport.handle_async_request(request)
        if response.is_redirect:
            await response.aclose()
            return await super().send(request, stream=stream, auth=auth, follow_redirects=follow_redirects)
        response.request = request
        if not stream:
            await response.aread()
        return response


class _DirectRoute:
    """A chat completion POSTed straight to the Http1Transport, with the openai client's own
    request head.

    Why: the openai client's way from `post()` to the transport (its options model copied twice,
    headers merged and normalised through httpx2.Headers several times, the URL parsed, an
    httpx2.Request and Response built, the response wrapped, parsed and unwrapped) was half of the
    LLM client's CPU per call at C = 128 (bench/bench_llm.py), and everything it computes is the
    same on every call but the body: this client is built here with a fixed key, no proxy and no
    auth flow. So the openai client builds one request, through its own steps, and its request
    line and headers are sent on every call with the body's Content-Length; the answer is read as
    the openai client reads it (JSON when the Content-Type says so, else the text), and failures
    are raised as its own errors, built by its own code: a timeout as APITimeoutError, a broken
    connection as APIConnectionError, a 4xx/5xx as the status's APIStatusError with the server's
    message and headers (Retry-After). A redirect goes the openai client's whole way, which follows it.
    """

    __slots__ = ("_openai", "_transport", "_origin", "_head", "_timeouts", "_template")

    def __init__(self, client: openai.AsyncOpenAI, transport: Http1Transport, template: httpx2.Request) -> None:
        self._openai, self._transport, self._template = client, transport, template
        self._origin: Origin = origin_of(template.url)
        self._timeouts: dict[str, float | None] = template.extensions.get("timeout", {})
        self._head = b"".join([template.method.encode(), b" ", template.url.raw_path, b" HTTP/1.1\r\n",
                               *[b"%s: %s\r\n" % (name, value) for name, value in template.headers.raw
                                 if name.lower() != b"content-length"]])

    @classmethod
    async def find(cls, client: openai.AsyncOpenAI, url: str, options: Mapping[str, Any]) -> _DirectRoute | None:
        """The route, if every call's request would be the same but for its body; else None, and
        the calls go the openai client's whole way: a proxy or another transport for the URL, an
        auth flow, or any header that differs between two requests (an idempotency key, a token)."""
        http = client._client
        if (not isinstance(http, DirectHttpClient) or http.auth is not None or client.custom_auth is not None
                or getattr(client, "_workload_identity_auth", None) is not None
                or getattr(client, "_provider_runtime", None) is not None):
            return None
        built = []
        try:  # the openai client's own steps (AsyncAPIClient.request), as far as the transport
            for attempt in range(2):
                probe = {**options, "idempotency_key": f"radcurate-probe-{attempt}"}
                prepared = await client._prepare_options(
                    FinalRequestOptions.construct(method="post", url=url, content=b"", **probe))
                request = client._build_request(prepared)
                await client._prepare_request(request)
                built.append(request)
        except Exception:  # an SDK whose steps differ (the tests pin that this one's are taken)
            log.warning("LLM calls go the openai client's whole way: its request could not be built ahead",
                        exc_info=True)
            return None
        first, second = built
        transport = http._transport_for_url(first.url)
        if (not isinstance(transport, Http1Transport) or first.headers.raw != second.headers.raw
                or first.url != second.url):
            return None
        return cls(client, transport, first)

    async def post(self, body: bytes) -> Any:
        """The answer's JSON (or text), or `_FOLLOW` for a redirect, which the caller sends the
        openai client's way."""
        if self._openai._client.is_closed:
            return _FOLLOW  # the openai client raises its own error for a closed client
        try:
            answer = await self._transport.send(self._origin, b"%sContent-Length: %d\r\n\r\n" % (self._head, len(body)),
                                                body, self._timeouts)
        except httpx2.TimeoutException as exc:
            raise openai.APITimeoutError(request=self._request(body)) from exc
        except httpx2.RequestError as exc:
            raise openai.APIConnectionError(request=self._request(body)) from exc
        status, headers, content = answer
        if 300 <= status < 400:
            return _FOLLOW
        content_type = encoding = b""
        for name, value in headers:
            name = name.lower()
            if name == b"content-type":
                content_type = value
            elif name == b"content-encoding":
                encoding = value
        if encoding or not 200 <= status < 300:
            response = self._response(body, answer)
            if not 200 <= status < 300:
                raise self._openai._make_status_error_from_response(response)
            content = response.content  # decoded as httpx2 decodes it (gzip, deflate, ...)
        if content_type.split(b";", 1)[0].strip().endswith(b"json"):
            return json.loads(content)
        return self._response(body, (status, headers, content)).text

    def _request(self, body: bytes) -> httpx2.Request:
        """The request as the openai client would have built it, for an error to carry."""
        template = self._template
        headers = [(name, value) for name, value in template.headers.raw if name.lower() != b"content-length"]
        return httpx2.Request(template.method, template.url, headers=headers, content=body,
                              extensions=template.extensions)

    def _response(self, body: bytes, answer: Answer) -> httpx2.Response:
        status, headers, content = answer
        return httpx2.Response(status, headers=headers, content=content, request=self._request(body),
                               extensions={"http_version": b"HTTP/1.1"})


_FOLLOW = object()  # a redirect: send the call the openai client's whole way


class _Flight:
    """One answer being computed, and how many callers besides the first wait for it."""

    __slots__ = ("answer", "followers")

    def __init__(self, answer: asyncio.Future[dict[str, Any]]) -> None:
        self.answer = answer
        self.followers = 0
        # Nobody may be waiting when it fails (every follower cancelled): mark its exception
        # retrieved, or asyncio logs "exception was never retrieved" for a handled failure.
        answer.add_done_callback(lambda done: done.cancelled() or done.exception())


class LlmClient:
    """An AsyncOpenAI client with the retry, concurrency, cache and metrics policy above."""

    def __init__(self, config: LlmConfig, cache: LlmCache | None = None, *,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.config = config
        self.cache: LlmCache = cache if cache is not None else MemoryLlmCache()
        self._sleep = sleep
        self._slots = asyncio.Semaphore(config.concurrency)
        self._admitted = asyncio.Semaphore(2 * config.concurrency)  # (cached)
        # The openai client over a lean HTTP/1.1 transport (services.common.http1) rather than
        # its aiohttp (~1.05 ms of client CPU per call) or default httpx2 one (1.8-2.5 ms,
        # growing with C as its pool polls every idle connection on each request): same client
        # API and errors, ~0.75 ms per call, flat in the concurrency.
        self._openai = openai.AsyncOpenAI(
            base_url=config.base_url or OPENAI_BASE_URL, api_key=config.api_key or "EMPTY",
            timeout=config.timeout_s, max_retries=0,
            http_client=DirectHttpClient(transport=Http1Transport(connection_limits(config.concurrency)),
                                         timeout=config.timeout_s),
        )
        # The endpoint as an absolute URL, joined once: a relative path is parsed, joined to the
        # base URL and parsed again on every call (~5% of the client's CPU per call).
        self._completions_url = str(self._openai.base_url.join("chat/completions"))
        # The openai client makes an idempotency key (a uuid4) for every POST that has none, and
        # this SDK never sends it: a call that goes its whole way is given one, unique per call all
        # the same, in case a later SDK does send it (then no call takes the direct route).
        self._idempotency_keys = map(f"radcurate-{uuid.uuid4()}-{{}}".format, itertools.count())
        # The labelled series, looked up once: `labels()` takes a lock and walks a dict per call.
        labels = (config.service, BACKEND, config.model)
        self._requests = {outcome: metrics.LLM_REQUESTS.labels(*labels, outcome)
                          for outcome in ("ok", "error", "cache_hit")}
        self._latency = metrics.LLM_LATENCY.labels(*labels)
        self._tokens = {kind: metrics.LLM_TOKENS.labels(*labels, kind) for kind in ("prompt", "completion")}
        # What every call sends but its body, found on the first call (services.common.llm._DirectRoute).
        self._route: _DirectRoute | None = None
        self._route_found = False
        self._route_lock = asyncio.Lock()
        self._in_flight: dict[str, _Flight] = {}
        self._formats: dict[str, tuple[dict[str, Any], str]] = {}  # (_response_format_json)
        self._handed_over: set[asyncio.Task[dict[str, Any]]] = set()  # referenced until done

    @property
    def model(self) -> str:
        return self.config.model

    async def aclose(self) -> None:
        await self._openai.close()

    async def cached(self, prompt_version: str, payload: Any,
                     compute: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """The cached answer for this input, or `compute()`'s, stored only once it is valid.

        Identical inputs in flight at once share one computation (single flight): a batch with
        the same report twice, or "No acute cardiopulmonary process." a hundred times, makes
        one call, not one per copy.

        The first caller computes in its own task rather than in a new one: a task created here
        would run only after every caller already scheduled had done its own preparation, so a
        batch of 2,000 reports sent its first request only after 2,000 preparations (~0.2 s
        under load, most of a round at C = 128). Whoever else asks meanwhile waits for its
        answer; if the first caller is cancelled, the computation is handed to a task of its own
        for them, so one caller cancelled never cancels the others.

        At most twice `concurrency` callers compute at once (`_admitted`): the calls in flight and
        as many ready to leave the moment a slot frees. The others wait before preparing their
        request, so a batch's preparations are spread over its run instead of all done at its
        start: 2,000 at once were ~0.1 s of CPU (0.2-0.5 s of wall time at load 5-10, past the
        first round's L), in which the first answers waited unread. Waiting for another caller's
        answer needs no admission (a duplicate still makes no call of its own).
        """
        key = cache_key(self.config.model, prompt_version, payload)
        if key not in self._in_flight:
            async with self._admitted:
                if key not in self._in_flight:  # else it began while this caller waited
                    return await self._lead(key, compute)
        flight = self._in_flight[key]
        self._requests["cache_hit"].inc()
        flight.followers += 1
        return await asyncio.shield(flight.answer)

    async def _lead(self, key: str, compute: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """Compute (or look up) the answer for `key` for this caller and whoever follows it."""
        flight = self._in_flight[key] = _Flight(asyncio.get_running_loop().create_future())
        try:
            value = await self._lookup_or_compute(key, compute)
        except asyncio.CancelledError:
            if flight.followers:
                self._hand_over(key, flight, compute)
            else:
                del self._in_flight[key]
            raise
        except BaseException as exc:
            del self._in_flight[key]
            flight.answer.set_exception(exc)
            raise
        del self._in_flight[key]
        flight.answer.set_result(value)
        return value

    def _hand_over(self, key: str, flight: _Flight, compute: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        """Finish a computation whose first caller was cancelled, for the callers still waiting."""
        task = asyncio.create_task(self._lookup_or_compute(key, compute))
        self._handed_over.add(task)

        def settle(done: asyncio.Task[dict[str, Any]]) -> None:
            self._handed_over.discard(done)
            self._in_flight.pop(key, None)
            if done.cancelled():
                flight.answer.cancel()
            elif (exc := done.exception()) is not None:
                flight.answer.set_exception(exc)
            else:
                flight.answer.set_result(done.result())

        task.add_done_callback(settle)

    async def _lookup_or_compute(self, key: str, compute: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        hit = await self.cache.get(key)
        if hit is not None:
            self._requests["cache_hit"].inc()
            return hit
        value = await compute()
        await self.cache.put(key, value)
        return value

    async def complete(self, messages: Sequence[Message], *, schema_name: str,
                       schema: dict[str, Any]) -> LlmReply:
        """One chat completion, retried on transient failures up to `max_attempts` times. Every
        message but the system prompt (ours) is masked for identifiers first (services.common.phi):
        whatever a backend puts in, no name, date, record number, phone or address leaves. Content
        the backend already masked (a phi.MaskedText) is not masked twice."""
        masked: list[Message] = [m if m.get("role") == "system" else {**m, "content": phi.masked(m["content"])}
                                 for m in messages]
        # Built before waiting for a slot, and once for every attempt: a slot freed by an answer
        # then carries the next request out at once, without this call's encoding in between.
        body = request_body(self.config.model, masked, self._response_format_json(schema_name, schema))
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                return await self._attempt(body)
            except openai.APIError as exc:
                if getattr(exc, "status_code", None) in _INPUT_REJECTED_STATUS:
                    raise PermanentError(f"LLM rejected the request: {exc}") from exc
                if not is_retryable(exc):
                    raise  # e.g. 401: a configuration fault, not this study's; the consumer retries
                if attempt == self.config.max_attempts:
                    raise LlmUnavailable(f"LLM failed {attempt} times; last: {exc}") from exc
                delay = retry_delay(exc, attempt, self.config)
                log.warning("LLM attempt %d failed (%s); retrying in %.2fs", attempt, exc, delay)
                await self._sleep(delay)  # outside the semaphore: a waiting retry holds no slot
        raise AssertionError("unreachable")

    def _response_format_json(self, schema_name: str, schema: dict[str, Any]) -> str:
        """`json_schema_format(schema_name, schema)` encoded, kept per schema name: the schema is
        the same on every call and encoding it was ~5% of the client's CPU per call. A schema
        changed since (or another under the same name) is told by comparing it with a copy of the
        one encoded (~0.3 us), and encoded again."""
        kept = self._formats.get(schema_name)
        if kept is None or kept[0] != schema:
            kept = self._formats[schema_name] = (copy.deepcopy(schema), _json(json_schema_format(schema_name, schema)))
        return kept[1]

    async def _attempt(self, body: bytes) -> LlmReply:
        async with self._slots:
            started = time.perf_counter()
            try:
                completion = await self._post(body)
            except openai.APIError:
                self._requests["error"].inc()
                raise
            finally:
                self._latency.observe(time.perf_counter() - started)
        if self._slots.locked():
            # The slot went to a waiting call, which runs only once the loop gets back to it:
            # let it send before this answer is read and validated. Answers that arrive together
            # are taken up in one pass of the loop, each waking its waiter; yielding twice puts
            # every one of their reads and validations after every one of those sends (once
            # would let the first answer's work run before the second waiter's send, and so on).
            # A round's next requests then leave within microseconds of its answers, not after
            # ~0.15 ms of work per answer ahead of them (a yield is ~1 us of CPU on uvloop).
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        self._requests["ok"].inc()
        return self._reply(completion)

    def _options(self) -> dict[str, Any]:
        # The client's own values, given per request: an option left out is filled with a deep
        # copy of its default, ~40% of building the request's options.
        return {"security": _BEARER_AUTH, "max_retries": 0, "timeout": self.config.timeout_s,
                "headers": dict(_NO_SDK_TELEMETRY)}

    async def _post(self, body: bytes) -> Any:
        """The completion's JSON: straight to the transport when every call's request is the same
        but for its body (_DirectRoute), else (and for a redirect) the openai client's whole way."""
        if not self._route_found:
            async with self._route_lock:
                if not self._route_found:
                    self._route = await _DirectRoute.find(self._openai, self._completions_url, self._options())
                    self._route_found = True
        if self._route is not None:
            answer = await self._route.post(body)
            if answer is not _FOLLOW:
                return answer
        return await self._openai.post(self._completions_url, cast_to=object, content=body,
                                       options={**self._options(), "idempotency_key": next(self._idempotency_keys)})

    def _reply(self, completion: Any) -> LlmReply:
        """The reply read from the completion's JSON as sent: building the openai client's typed
        ChatCompletion from it costs ~0.05 ms of CPU per call (~5%), and only these fields are read."""
        body = completion if isinstance(completion, Mapping) else {}
        usage = body.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        self._tokens["prompt"].inc(prompt_tokens)
        self._tokens["completion"].inc(completion_tokens)
        choices = body.get("choices") or []
        if not choices:
            return LlmReply("", None, prompt_tokens, completion_tokens)
        content, reasoning = split_reasoning(choices[0].get("message") or {})
        return LlmReply(content, reasoning, prompt_tokens, completion_tokens)

    async def complete_json(self, messages: Sequence[Message], *, schema_name: str, schema: dict[str, Any],
                            validate: Callable[[dict[str, Any], LlmReply], T]) -> T:
        """A validated structured answer; an invalid one is retried ONCE with the error shown.

        A second invalid answer raises PermanentError: the input itself is likely the problem,
        so the consumer dead-letters the study rather than spending more calls on it.
        """
        conversation = list(messages)
        for attempt in (1, 2):
            reply = await self.complete(conversation, schema_name=schema_name, schema=schema)
            try:
                return validate(parse_json_object(reply.content), reply)
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                reason = str(exc)[:_ERROR_PREVIEW]
                if attempt == 2:
                    raise PermanentError(f"{schema_name}: invalid model output after one retry: {reason}") from exc
                log.info("%s: invalid model output, retrying once: %s", schema_name, reason)
                conversation += [
                    {"role": "assistant", "content": reply.content},
                    {"role": "user", "content": f"That answer was invalid: {reason}\n"
                                                "Answer again with only a JSON object that matches the schema."},
                ]
        raise AssertionError("unreachable")
