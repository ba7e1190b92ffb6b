"""Issue 11 items 14 and 16, against the real gateway process: a request body is bounded before
it is read, a request without a valid token is turned away before its body is read, a study id
cannot be a path, and every response carries security headers."""

from __future__ import annotations

import json
import re
import socket
from urllib.parse import urlsplit

import pytest

from radcurate.client import Gateway

pytestmark = pytest.mark.e2e
TWO_GB = 2 * 1024**3


def raw_request(url: str, head: str, body: bytes = b"", timeout: float = 10) -> tuple[int, dict]:
    """Send `head` (and `body`) on a plain socket; the status and problem body of the answer.
    A server that waits for the rest of a declared body never answers: the socket times out."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1] or b"{}")


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def headers(path: str, host: str, token: str | None = None, **extra: str) -> str:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json"]
    lines += [f"Authorization: Bearer {token}"] if token else []
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in extra.items()]
    return "\r\n".join(lines) + "\r\n"


def test_a_huge_body_without_a_token_is_refused_before_it_is_read(stack):
    host = urlsplit(stack["gateway_url"]).netloc
    status, problem = raw_request(stack["gateway_url"], headers("/api/v1/users", host, Content_Length=str(TWO_GB)))
    assert status == 401 and "bearer token" in problem["detail"]
    status, problem = raw_request(stack["gateway_url"],
                                  headers("/api/v1/users", host, "rc_forged", Content_Length=str(TWO_GB)))
    assert status == 401 and "not valid" in problem["detail"]


def test_a_declared_body_over_the_route_limit_is_refused_before_it_is_read(stack):
    host = urlsplit(stack["gateway_url"]).netloc
    status, problem = raw_request(stack["gateway_url"], headers("/api/v1/users", host, stack["admin_token"],
                                                                Content_Length=str(TWO_GB)))
    assert status == 413 and problem["status"] == 413 and "1048576 bytes" in problem["detail"]


def test_a_streamed_body_is_cut_off_at_the_route_limit(stack):
    host = urlsplit(stack["gateway_url"]).netloc
    chunk = b"x" * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(24)) + b"0\r\n\r\n"  # 1.5 MiB
    status, problem = raw_request(stack["gateway_url"], headers("/api/v1/users", host, stack["admin_token"],
                                                                Transfer_Encoding="chunked"), body)
    assert status == 413 and "larger than this route accepts" in problem["detail"]


async def test_ordinary_requests_are_unaffected(stack):
    api = Gateway(stack["gateway_url"], stack["admin_token"])
    try:
        token = await api.create_user("limits-reader", "reviewer", "Reader under limits")
        assert token.startswith("rc_")
    finally:
        await api.aclose()


async def test_a_study_id_that_could_be_a_path_is_refused_at_ingest(stack, tmp_path):
    import httpx

    from tests.support.factories import dicom_bytes

    async with httpx.AsyncClient(base_url=stack["gateway_url"]) as client:
        resp = await client.post("/api/v1/studies", headers={"Authorization": f"Bearer {stack['admin_token']}"},
                                 data={"study_id": "../../escape", "patient_id": "P-1", "report": "Normal chest."},
                                 files=[("files", ("x.dcm", dicom_bytes(tmp_path, "ESC"), "application/dicom"))])
    assert resp.status_code == 422 and resp.headers["content-type"].startswith("application/problem+json")
    assert "is not allowed" in resp.json()["detail"]


async def test_responses_carry_security_headers_and_docs_load_nothing_from_a_cdn(stack):
    import httpx

    async with httpx.AsyncClient(base_url=stack["gateway_url"]) as client:
        page = await client.get("/")
        api = await client.get("/api/v1/progress", headers={"Authorization": f"Bearer {stack['admin_token']}"})
        docs = await client.get("/docs")
        spec = await client.get("/openapi.json")
    for resp in (page, api):
        assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
        assert resp.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    # Swagger UI is served from the gateway itself: no script from elsewhere, none inline (the CSP holds).
    assert docs.status_code == 200 and "script-src 'self'" in docs.headers["content-security-policy"]
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", docs.text, flags=re.S)
    assert scripts and all(re.search(r'src="/docs/', attrs) and not body.strip() for attrs, body in scripts)
    assert "http://" not in docs.text and "https://" not in docs.text
    assert spec.status_code == 200 and spec.json()["info"]["title"] == "RadCurate gateway"


async def test_tokens_expire_and_can_be_renewed(stack):
    from radcurate.client import GatewayError
    from tests.e2e.conftest import query

    admin = Gateway(stack["gateway_url"], stack["admin_token"])
    try:
        resp = await admin.request("POST", "/api/v1/users", json={"user_id": "expiring", "role": "reviewer"})
        issued = resp.json()
        assert issued["expires_at"]  # every issued token has an end
        query(stack, "gateway", "UPDATE users SET token_expires_at = now() - interval '1 second'"
                                " WHERE user_id = 'expiring' RETURNING user_id")
        with pytest.raises(GatewayError) as refused:
            await admin.as_user(issued["token"]).request("GET", "/api/v1/me")
        assert refused.value.status == 401 and "expired" in str(refused.value)

        renewing = (await admin.request("POST", "/api/v1/users",
                                        json={"user_id": "renewing", "role": "reviewer"})).json()
        old = admin.as_user(renewing["token"])
        fresh = (await old.request("POST", "/api/v1/me/token")).json()
        assert (await admin.as_user(fresh["token"]).request("GET", "/api/v1/me")).json()["user_id"] == "renewing"
        with pytest.raises(GatewayError) as stale:
            await old.request("GET", "/api/v1/me")
        assert stale.value.status == 401
    finally:
        await admin.aclose()
