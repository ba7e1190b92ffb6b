"""The object store's own SigV4 signer gives the Authorization header minio's signer gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from minio import Minio
from minio.credentials import Credentials
from minio.signer import sign_v4_s3
from minio.time import to_amz_date

from services.common import objectstore
from services.common.objectstore import UNSIGNED_PAYLOAD, ObjectStore, authorization_v4
from services.common.put_transport import PutTransport

DAY = datetime(2026, 11, 30, 23, 59, 58, 123456, tzinfo=UTC)


def minio_authorization(method: str, url: str, region: str, headers: dict[str, str], credentials: Credentials,
                        payload: str, date: datetime) -> str:
    return sign_v4_s3(method=method, url=urlsplit(url), region=region, headers=dict(headers),
                      credentials=credentials, content_sha256=payload, date=date)["Authorization"]


CASES = [
    ("PUT", "http://127.0.0.1:8333/radcurate-objects/dicom/sha256/ab/" + "ab" * 32, "us-east-1",
     {"Content-Type": "application/dicom", "Content-Length": "132506"}, "access", "secret/with+chars",
     UNSIGNED_PAYLOAD),
    ("GET", "http://localhost:9000/b/k%20with%20space/x~y", "eu-west-3", {}, "AKIA", "s3cr3t",
     "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    ("PUT", "https://minio.example:9000/public/releases/r1/manifest.json", "us-east-1",
     {"x-amz-copy-source": "/objects/dicom/sha256/cd/cd", "x-amz-copy-source-if-match": '"etag"',
      "Content-Type": "  text/plain;   charset=utf-8  ", "User-Agent": "not signed"}, "ak", "sk", "f" * 64),
]


@pytest.mark.parametrize(("method", "url", "region", "extra", "access", "secret", "payload"), CASES)
@pytest.mark.parametrize("date", [DAY, DAY + timedelta(seconds=3), DAY + timedelta(days=400)])
@pytest.mark.parametrize("token", [None, "session-token"])
def test_the_authorization_is_minios(method: str, url: str, region: str, extra: dict[str, str], access: str,
                                     secret: str, payload: str, date: datetime, token: str | None) -> None:
    credentials = Credentials(access, secret, token)
    headers = {"Host": urlsplit(url).netloc, **extra, "x-amz-content-sha256": payload, "x-amz-date": to_amz_date(date)}
    if token:
        headers["X-Amz-Security-Token"] = token
    assert authorization_v4(method, urlsplit(url).path, region, headers, access, secret, payload, date) == \
        minio_authorization(method, url, region, headers, credentials, payload, date)


def test_a_new_day_or_secret_gets_its_own_key() -> None:
    headers = {"Host": "h:1", "x-amz-content-sha256": UNSIGNED_PAYLOAD}
    for date, secret in [(DAY, "a"), (DAY + timedelta(seconds=2), "a"), (DAY + timedelta(days=1), "a"), (DAY, "b")]:
        headers["x-amz-date"] = to_amz_date(date)
        assert authorization_v4("PUT", "/b/k", "us-east-1", headers, "ak", secret, UNSIGNED_PAYLOAD, date) == \
            minio_authorization("PUT", "http://h:1/b/k", "us-east-1", headers, Credentials("ak", secret),
                                UNSIGNED_PAYLOAD, date)


def test_the_stores_requests_carry_minios_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PUT, a GET and a copy as the store sends them: signed as minio would sign those headers."""
    sent: list[tuple[str, str, dict[str, str]]] = []

    class Transport(PutTransport):
        def __init__(self) -> None:  # nothing to connect to: the requests are kept, answered 200
            pass

        def urlopen(self, method: str, url: str, *, body: object = None, headers: dict[str, str],
                    preload_content: bool = True, sink: object = None) -> objectstore.Answer:
            sent.append((method, url, dict(headers)))
            return objectstore.Answer(200, b"", {"etag": '"e"'})

    store = ObjectStore(Minio("127.0.0.1:8333", access_key="ak", secret_key="sk/+", secure=False, region="us-east-1"))
    monkeypatch.setattr(store, "_http", Transport())
    store.put_bytes("objects", "dicom/sha256/ab/abc", b"x" * 10, content_type="application/dicom")
    store.copy("public", "r/1.dcm", "objects", "dicom/sha256/ab/abc", match_etag="e")
    store.read_into("objects", "dicom/sha256/ab/abc", lambda _: None)
    assert [m for m, _, _ in sent] == ["PUT", "PUT", "GET"]
    for method, url, headers in sent:
        date = datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        unsigned = {k: v for k, v in headers.items() if k != "Authorization"}
        assert headers["Authorization"] == minio_authorization(method, url, "us-east-1", unsigned,
                                                               Credentials("ak", "sk/+"),
                                                               headers["x-amz-content-sha256"], date)
