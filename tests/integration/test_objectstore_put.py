"""The object store's own PUT, GET and copy (issue 15) against the stack's real S3 server: one signed request
per object, the body streamed as it is; still refused without valid credentials; and off loopback
and TLS the payload's sha256 is still sent (MinIO checks it; the local SeaweedFS 4.x does not)."""

from __future__ import annotations

import hashlib
import io
import os
from types import SimpleNamespace

import pytest
from minio import Minio
from minio.error import S3Error

from services.common.objectstore import UNSIGNED_PAYLOAD, ObjectStore, http_client, is_loopback

pytestmark = pytest.mark.integration


def store(infra: dict, secret_key: str | None = None) -> ObjectStore:
    s3 = infra["s3"]
    return ObjectStore(Minio(s3["endpoint"], access_key=s3["access_key"], secret_key=secret_key or s3["secret_key"],
                             secure=False, region="us-east-1", http_client=http_client(5, 30)))


def bucket(infra: dict) -> str:
    return infra["buckets"]["objects"]


def test_loopback_hosts_are_told_from_others() -> None:
    assert [is_loopback(h) for h in ("127.0.0.1:9000", "localhost:8333", "[::1]:9000", "127.3.4.5")] == [True] * 4
    assert [is_loopback(h) for h in ("minio:9000", "10.0.0.7:9000", "s3.example.org", "[::2]:9000")] == [False] * 4


def test_bytes_and_a_streamed_file_are_stored_whole_in_one_request(infra: dict) -> None:
    s = store(infra)
    assert s._unsigned_payload  # the stack's S3 server is on loopback
    small = os.urandom(1000)
    key = s.put_content_addressed(bucket(infra), small)
    assert key.endswith(hashlib.sha256(small).hexdigest()) and s.get_bytes(bucket(infra), key) == small
    big = os.urandom(7 * 2**20)  # over minio's 5 MiB part size: minio would have made a multipart upload
    fp = io.BytesIO(b"header" + big)
    fp.seek(6)  # from the current position to the end
    s.put_stream(bucket(infra), "test-objectstore/big", fp, len(big))
    assert s.get_bytes(bucket(infra), "test-objectstore/big") == big


def test_a_put_with_a_wrong_secret_is_refused_and_stores_nothing(infra: dict) -> None:
    wrong = store(infra, secret_key="not-the-secret-key")
    with pytest.raises(S3Error) as refused:
        wrong.put_bytes(bucket(infra), "test-objectstore/forged", b"forged")
    assert refused.value.code in ("SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId")
    assert not store(infra).exists(bucket(infra), "test-objectstore/forged")


def spy_on_payload_hashes(s: ObjectStore) -> list[str]:
    """The x-amz-content-sha256 of each request `s` sends (the requests still go to the server)."""
    sent: list[str] = []
    real = s._http.urlopen

    def urlopen(method, url, **kw):  # type: ignore[no-untyped-def]
        sent.append(kw["headers"]["x-amz-content-sha256"])
        return real(method, url, **kw)

    s._http = SimpleNamespace(urlopen=urlopen)  # type: ignore[assignment]
    return sent


def test_the_payload_is_unsigned_on_loopback_and_hashed_elsewhere(infra: dict) -> None:
    data = b"the bytes the digest names"
    digest = hashlib.sha256(data).hexdigest()
    on_loopback = store(infra)
    sent = spy_on_payload_hashes(on_loopback)
    on_loopback.put_bytes(bucket(infra), "test-objectstore/loopback", data)
    assert sent == [UNSIGNED_PAYLOAD]
    elsewhere = store(infra)
    elsewhere._unsigned_payload = False  # as for an S3 server reached over plain HTTP on the network
    sent = spy_on_payload_hashes(elsewhere)
    elsewhere.put_bytes(bucket(infra), "test-objectstore/checked", data)  # hashed here
    elsewhere.put_stream(bucket(infra), "test-objectstore/checked-stream", io.BytesIO(data), len(data),
                         sha256=digest)  # the caller's digest, not hashed again
    assert sent == [digest, digest]
    assert elsewhere.get_bytes(bucket(infra), "test-objectstore/checked-stream") == data
    with pytest.raises(ValueError, match="needs the body's sha256"):  # never streamed unhashed off loopback
        elsewhere._put(bucket(infra), "test-objectstore/unhashed", io.BytesIO(data), len(data), "text/plain", None)


def count_requests(s: ObjectStore) -> list[str]:
    """The method of each request `s` sends, on its own transport or through minio's pool."""
    sent: list[str] = []
    for holder in (s._http, s.client._http):
        real = holder.urlopen

        def urlopen(method, url, real=real, **kw):  # type: ignore[no-untyped-def]
            sent.append(method)
            return real(method, url, **kw)
        holder.urlopen = urlopen  # type: ignore[method-assign]
    return sent


def test_an_object_is_read_into_a_sink_in_one_request_with_its_etag(infra: dict) -> None:
    s = store(infra)
    data = os.urandom(3 * 2**20 + 5)
    s.put_bytes(bucket(infra), "test-objectstore/read", data)
    etag = s.client.stat_object(bucket(infra), "test-objectstore/read").etag
    sent, pieces = count_requests(s), list[bytes]()
    assert s.read_into(bucket(infra), "test-objectstore/read", pieces.append) == etag
    assert b"".join(pieces) == data and sent == ["GET"]
    assert s.get_bytes(bucket(infra), "test-objectstore/read") == data and sent == ["GET", "GET"]
    with pytest.raises(S3Error) as missing:
        s.read_into(bucket(infra), "test-objectstore/no-such-object", pieces.append)
    assert missing.value.code == "NoSuchKey"
    with pytest.raises(S3Error) as missing:
        s.get_bytes(bucket(infra), "test-objectstore/no-such-object")
    assert missing.value.code == "NoSuchKey"


def test_a_copy_is_one_request_and_made_only_on_the_etag_given(infra: dict) -> None:
    s, src = store(infra), "test-objectstore/copy-source"
    s.put_bytes(bucket(infra), src, b"checked bytes")
    etag = s.client.stat_object(bucket(infra), src).etag
    sent = count_requests(s)
    s.copy(bucket(infra), "test-objectstore/copy-1", bucket(infra), src, match_etag=etag)
    assert sent == ["PUT"]  # minio's copy_object asks the source's size first (HEAD)
    assert s.get_bytes(bucket(infra), "test-objectstore/copy-1") == b"checked bytes"
    s.put_bytes(bucket(infra), src, b"rewritten bytes")
    with pytest.raises(S3Error) as refused:
        s.copy(bucket(infra), "test-objectstore/copy-2", bucket(infra), src, match_etag=etag)
    assert refused.value.code == "PreconditionFailed"
    assert not s.exists(bucket(infra), "test-objectstore/copy-2")
    s.copy(bucket(infra), "test-objectstore/copy-3", bucket(infra), src)  # no ETag given: whatever is there
    assert s.get_bytes(bucket(infra), "test-objectstore/copy-3") == b"rewritten bytes"
