"""The object store (MinIO in production, any S3 server locally), reached with the minio client.

DICOM and release files are stored under content-addressed keys (sha256 of the bytes), so storing
the same bytes twice is a no-op and a key is its own integrity check. The minio client blocks:
async callers go through `asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import io
import ipaddress
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import S3Error, ServerError
from minio.time import to_amz_date

from services.common.put_transport import Answer, PutTransport
from services.common.settings import ServiceSettings


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_key(data: bytes, prefix: str = "dicom") -> str:
    return digest_key(sha256_hex(data), prefix)


def digest_key(digest: str, prefix: str = "dicom") -> str:
    """The content-addressed key of bytes whose sha256 is `digest`."""
    return f"{prefix}/sha256/{digest[:2]}/{digest}"


def http_client(connect_s: float, read_s: float, pool_size: int = 16) -> urllib3.PoolManager:
    """The minio client's transport with explicit timeouts. minio's own default waits 300 s to
    connect and 300 s per read, with five retries: an object-store outage would hold a consumer
    (and, where a handler writes to the store inside its transaction, a database transaction)
    for up to half an hour before the failure is even seen. Fail fast instead; the consumer
    pauses and retries the event later (`failures.is_transient`)."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_s, read=read_s),
        maxsize=pool_size,
        cert_reqs="CERT_REQUIRED", ca_certs=certifi.where(),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()  # the signed payload of a request without a body
_CHUNK = 1 << 20


def is_loopback(host: str) -> bool:
    """Whether `host` ("127.0.0.1:9000", "[::1]:9000", "localhost:8333") names this machine."""
    name = urlsplit(f"//{host}").hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class ObjectStore:
    def __init__(self, client: Minio) -> None:
        self.client = client
        # The write path below signs and sends PUTs itself, on the minio client's endpoint,
        # credentials and connection pool (its timeouts and retries), path-style as minio does
        # for any non-AWS endpoint. An AWS endpoint (virtual-host style) keeps minio's put_object.
        base = client._base_url
        self._direct_put = not base.is_aws_host
        self._base = f"{'https' if base.is_https else 'http'}://{base.host}"
        self._region = base.region or "us-east-1"
        self._credentials = client._provider
        self._http: urllib3.PoolManager | PutTransport = client._http
        if not base.is_https and self._direct_put:
            # Plain HTTP: PUTs through the lean kept-alive transport (put_transport: ~5x less
            # client CPU per PUT than urllib3's), with the pool's timeouts and retry policy.
            self._http = PutTransport(*_host_port(base.host), **_policy_of(client._http))
        # The payload's sha256 protects the body in transit; the server then hashes every body
        # again to check it (a second pass over each object, on both sides). Over TLS (minio's own
        # choice for https) or loopback nothing can change the bytes in transit, so the body is
        # sent as UNSIGNED-PAYLOAD; the request itself (method, key, length, date) stays signed,
        # and the server refuses it without valid credentials. Elsewhere the payload is hashed.
        self._unsigned_payload = base.is_https or is_loopback(base.host)

    @classmethod
    def from_settings(cls, s: ServiceSettings) -> ObjectStore:
        return cls(
            Minio(
                s.s3_endpoint,
                access_key=s.s3_access_key.get_secret_value(),
                secret_key=s.s3_secret_key.get_secret_value(),
                secure=s.s3_secure,
                region="us-east-1",
                http_client=http_client(s.s3_connect_timeout_seconds, s.s3_read_timeout_seconds),
            )
        )

    def ensure_bucket(self, bucket: str) -> None:
        if not self.client.bucket_exists(bucket):
            try:
                self.client.make_bucket(bucket)
            except S3Error as exc:  # created by a concurrent starter
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream",
                  sha256: str | None = None) -> None:
        """Store `data` under `key` (`sha256`: its digest, when the caller already has it)."""
        if self._direct_put:
            self._put(bucket, key, data, len(data), content_type, sha256)
        else:
            self.client.put_object(bucket, key, io.BytesIO(data), len(data), content_type=content_type)

    def put_stream(self, bucket: str, key: str, fp: BinaryIO, length: int,
                   content_type: str = "application/octet-stream", sha256: str | None = None) -> None:
        """Store an open file from its current position to its end, `length` bytes (large objects
        stay out of memory; `sha256`: their digest, when the caller already has it)."""
        if self._direct_put and (self._unsigned_payload or sha256 is not None):
            self._put(bucket, key, fp, length, content_type, sha256)
        else:  # the payload must be hashed and the caller has no digest: minio reads it in parts
            self.client.put_object(bucket, key, fp, length, content_type=content_type)

    def _put(self, bucket: str, key: str, body: bytes | BinaryIO, length: int, content_type: str,
             sha256: str | None) -> None:
        """One signed PUT Object request: the whole object in one request, the body streamed
        from a file as it is (minio's put_object reads it into memory in parts, and above 5 MiB
        makes a multipart upload of three or more requests)."""
        if self._unsigned_payload:
            payload = UNSIGNED_PAYLOAD
        elif sha256 is not None:
            payload = sha256
        elif isinstance(body, bytes):
            payload = sha256_hex(body)
        else:
            raise ValueError("a streamed PUT off loopback and TLS needs the body's sha256")
        resp = self._signed("PUT", bucket, key, {"Content-Type": content_type, "Content-Length": str(length)},
                            payload, body=body)
        if resp.status != 200:
            raise _error(resp, bucket, key)

    def _signed(self, method: str, bucket: str, key: str, headers: dict[str, str], payload: str, *,
                body: bytes | BinaryIO | None = None,
                sink: Callable[[bytes], object] | None = None) -> urllib3.BaseHTTPResponse | Answer:
        """One request signed (SigV4, path-style) as minio signs it, sent on the direct transport."""
        url = urlsplit(f"{self._base}/{bucket}/{quote(key, safe='/~')}")
        now = datetime.now(UTC)
        headers = {"Host": url.netloc, **headers, "x-amz-content-sha256": payload, "x-amz-date": to_amz_date(now)}
        credentials = self._credentials.retrieve()
        if credentials.session_token:
            headers["X-Amz-Security-Token"] = credentials.session_token
        headers["Authorization"] = authorization_v4(method, url.path, self._region, headers, credentials.access_key,
                                                    credentials.secret_key, payload, now)
        if sink is not None and isinstance(self._http, PutTransport):
            return self._http.urlopen(method, url.geturl(), body=body, headers=headers, sink=sink)
        return self._http.urlopen(method, url.geturl(), body=body, headers=headers, preload_content=True)

    def read_into(self, bucket: str, key: str, sink: Callable[[bytes], object]) -> str:
        """Hand the object's bytes to `sink` in order, as they arrive (an object can be large), and
        return its ETag (unquoted). On plain HTTP through the lean transport (put_transport: a
        fraction of minio's and urllib3's client CPU per GET); elsewhere through minio. A failure
        part-way is raised (OSError / S3Error): read again into a fresh sink."""
        if not isinstance(self._http, PutTransport):
            resp = self.client.get_object(bucket, key)
            try:
                for chunk in resp.stream(_CHUNK):
                    sink(chunk)
                return str(resp.headers.get("ETag", "")).strip('"')
            finally:
                resp.close()
                resp.release_conn()
        answer = self._signed("GET", bucket, key, {}, EMPTY_SHA256, sink=sink)
        if answer.status != 200:
            raise _error(answer, bucket, key)
        return str(answer.headers.get("etag", "")).strip('"')

    def copy(self, bucket: str, key: str, source_bucket: str, source_key: str, *,
             match_etag: str | None = None) -> None:
        """Server-side copy of `source_bucket/source_key` to `bucket/key`, only while the source's
        ETag is `match_etag` when one is given (the store answers PreconditionFailed otherwise,
        raised as S3Error). One request on the lean transport where PUTs go through it (minio's
        copy_object first asks the source's size, to copy over 5 GiB in parts: DICOM objects are
        far below S3's 5 GiB single-copy limit); elsewhere through minio."""
        if not isinstance(self._http, PutTransport):
            self.client.copy_object(bucket, key, CopySource(source_bucket, source_key, match_etag=match_etag))
            return
        headers = {"x-amz-copy-source": quote(f"/{source_bucket}/{source_key}")}
        if match_etag:
            headers["x-amz-copy-source-if-match"] = match_etag
        answer = self._signed("PUT", bucket, key, headers, EMPTY_SHA256)
        # S3 may answer a copy 200 and still fail it: the error then is the body.
        if answer.status != 200 or b"<Error>" in answer.data[:512]:
            raise _error(answer, bucket, key)

    def put_content_addressed(self, bucket: str, data: bytes, prefix: str = "dicom",
                              content_type: str = "application/dicom") -> str:
        """Store bytes under their sha256 key. Writing the same bytes again is harmless, so there is
        no existence check first (it would cost a round trip per object on the hot ingest path)."""
        digest = sha256_hex(data)
        key = digest_key(digest, prefix)
        self.put_bytes(bucket, key, data, content_type, sha256=digest)
        return key

    def exists(self, bucket: str, key: str) -> bool:
        try:
            self.client.stat_object(bucket, key)
            return True
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return False
            raise

    def listing(self, bucket: str, prefix: str) -> list[tuple[str, datetime]]:
        """(key, last modified) of every object under `prefix`, recursively."""
        return [(o.object_name, o.last_modified) for o in self.client.list_objects(bucket, prefix, recursive=True)
                if o.object_name is not None and o.last_modified is not None]

    def modified_at(self, bucket: str, key: str) -> datetime | None:
        """When the object was last written, or None when there is none."""
        try:
            return self.client.stat_object(bucket, key).last_modified
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return None
            raise

    def delete(self, bucket: str, key: str) -> None:
        self.client.remove_object(bucket, key)

    def get_bytes(self, bucket: str, key: str) -> bytes:
        """The object's bytes (S3Error when there is none): through the lean GET where PUTs go
        through it (`read_into`), else through minio."""
        if isinstance(self._http, PutTransport):
            pieces: list[bytes] = []
            self.read_into(bucket, key, pieces.append)
            return b"".join(pieces)
        resp = self.client.get_object(bucket, key)
        try:
            return resp.read()
        finally:
            resp.close()
            resp.release_conn()

    def presigned_get(self, bucket: str, key: str, seconds: int = 300) -> str:
        return self.client.presigned_get_object(bucket, key, expires=timedelta(seconds=seconds))

    async def aget_bytes(self, bucket: str, key: str) -> bytes:
        return await asyncio.to_thread(self.get_bytes, bucket, key)

    async def aput_bytes(self, bucket: str, key: str, data: bytes,
                         content_type: str = "application/octet-stream") -> None:
        await asyncio.to_thread(self.put_bytes, bucket, key, data, content_type)


_SPACES = re.compile(" +")
_UNSIGNED_HEADERS = frozenset({"authorization", "user-agent"})


def authorization_v4(method: str, path: str, region: str, headers: dict[str, str], access_key: str,
                     secret_key: str, payload: str, date: datetime) -> str:
    """The SigV4 Authorization header of an S3 request without a query string: what minio's
    sign_v4_s3 puts there (every header but Authorization and User-Agent signed, their values'
    runs of spaces made one and trimmed), for ~1/3 of its CPU. Its four HMACs deriving the day's
    key were most of the ~40 µs it spent per request (one PUT per ingested study, a GET and a
    copy per released object): the key is the same all day, so it is derived once (_day_key)."""
    canonical = sorted({k.lower(): _SPACES.sub(" ", v).strip() if "  " in v else v.strip()
                        for k, v in headers.items() if k.lower() not in _UNSIGNED_HEADERS}.items())
    signed = ";".join(k for k, _ in canonical)
    request = "\n".join((method, path or "/", "", *(f"{k}:{v}" for k, v in canonical), "", signed, payload))
    day = date.strftime("%Y%m%d")
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{date.strftime('%Y%m%dT%H%M%SZ')}\n{scope}\n" \
              f"{hashlib.sha256(request.encode()).hexdigest()}"
    signature = hmac.new(_day_key(secret_key, day, region), to_sign.encode(), hashlib.sha256).hexdigest()
    return f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"


@functools.lru_cache(maxsize=8)
def _day_key(secret_key: str, day: str, region: str) -> bytes:
    """SigV4's signing key for one day, region and the s3 service."""
    key = hmac.digest(f"AWS4{secret_key}".encode(), day.encode(), "sha256")
    for part in (region, "s3", "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    return key


def _host_port(host: str) -> tuple[str, int]:
    """("127.0.0.1", 9000) of "127.0.0.1:9000" (port 80 when none is given: plain HTTP)."""
    parts = urlsplit(f"//{host}")
    return parts.hostname or "", parts.port or 80


def _policy_of(pool: urllib3.PoolManager) -> dict[str, Any]:
    """The timeouts, pool size and retry policy the minio client's pool was made with
    (`http_client`), for the PUT transport that stands in for it."""
    policy: dict[str, Any] = {"connect_s": 60.0, "read_s": 300.0}
    timeout = pool.connection_pool_kw.get("timeout")
    if isinstance(timeout, urllib3.Timeout):
        for name, value in (("connect_s", timeout.connect_timeout), ("read_s", timeout.read_timeout)):
            if isinstance(value, int | float):
                policy[name] = float(value)
    if isinstance(size := pool.connection_pool_kw.get("maxsize"), int):
        policy["pool_size"] = size
    retries = pool.connection_pool_kw.get("retries")
    if isinstance(retries, urllib3.Retry) and isinstance(retries.total, int):
        policy["retries"], policy["backoff_s"] = retries.total, retries.backoff_factor
    return policy


def _error(resp: urllib3.BaseHTTPResponse | Answer, bucket: str, key: str) -> S3Error | ServerError:
    """The S3 error a failed PUT answered (as minio raises it: failures.is_transient classifies it)."""
    if isinstance(resp, Answer):  # minio's error types hold a urllib3 response
        resp = urllib3.HTTPResponse(body=resp.data, headers=resp.headers, status=resp.status, preload_content=True)
    if resp.data and b"<Error" in resp.data[:256]:
        try:
            return S3Error.fromxml(resp)
        except Exception:  # noqa: BLE001 (not an error document after all: fall through)
            pass
    if resp.status >= 500:
        return ServerError(f"server failed with HTTP status code {resp.status}", resp.status)
    code = {403: "AccessDenied", 404: "NoSuchBucket"}.get(resp.status, f"HTTP{resp.status}")
    return S3Error(resp, code, resp.data.decode(errors="replace")[:200] if resp.data else None, f"/{bucket}/{key}",
                   resp.headers.get("x-amz-request-id"), resp.headers.get("x-amz-id-2"), bucket, key)
