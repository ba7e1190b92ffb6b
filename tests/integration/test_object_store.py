"""The local S3 server (SeaweedFS) on the properties the stack relies on: only signed requests reach
data, on every port it opens (its gRPC ports only with the stack's own certificate), and
conditional PUTs are an exact compare-and-swap."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.sigv4 import signed_headers

pytestmark = pytest.mark.integration

BUCKET = "radcurate-objects"


def s3_url(infra: dict, key: str, bucket: str = BUCKET) -> str:
    return f"http://{infra['s3']['endpoint']}/{bucket}/{key}"


def signed(infra: dict, method: str, url: str, body: bytes = b"", secret: str | None = None,
           headers: dict[str, str] | None = None) -> httpx.Response:
    s3 = infra["s3"]
    h = signed_headers(method, url, s3["access_key"], secret or s3["secret_key"], body, headers)
    return httpx.request(method, url, content=body, headers=h, timeout=10)


def volume_file_ids(data_dir: Path, collection: str, marker: bytes) -> list[str]:
    """The volume-server file ids (`<volume>,<key><cookie>`) of the needles holding `marker`."""
    fids = []
    for dat in sorted(data_dir.glob(f"{collection}_*.dat")):
        volume_id = dat.stem.rsplit("_", 1)[1]
        raw = dat.read_bytes()
        offset = 8  # the super block
        while offset + 16 <= len(raw):
            cookie, key, size = struct.unpack(">IQI", raw[offset:offset + 16])
            total = 16 + size + 4 + 8  # header, body, checksum, append time (needle version 3)
            if marker in raw[offset + 16:offset + 16 + size]:
                fids.append(f"{volume_id},{key:x}{cookie:08x}")
            offset += total + (-total % 8)
    return fids


@pytest.fixture
def embedded(infra: dict) -> dict:
    if infra["s3"].get("external"):
        pytest.skip("probes the embedded S3 server's ports and files; RADCURATE_S3_ENDPOINT is set")
    return infra


def test_only_signed_requests_reach_objects_on_any_port(embedded: dict) -> None:
    infra = embedded
    marker = f"PHI-{uuid.uuid4().hex}".encode()
    key = f"probe/{uuid.uuid4().hex}.dcm"
    assert signed(infra, "PUT", s3_url(infra, key), marker).status_code == 200
    assert signed(infra, "GET", s3_url(infra, key)).content == marker

    wrong = signed(infra, "GET", s3_url(infra, key), secret="not-the-secret")
    assert wrong.status_code == 403 and marker not in wrong.content
    assert httpx.get(s3_url(infra, key)).status_code == 403
    foreign = signed_headers("GET", s3_url(infra, key), "someone-else", infra["s3"]["secret_key"])
    assert httpx.get(s3_url(infra, key), headers=foreign).status_code == 403

    fids = volume_file_ids(Path(infra["s3"]["home"]) / "data", BUCKET, marker)
    assert fids, "the probe object should be on disk in a volume file"
    paths = [f"/{BUCKET}/{key}", f"/buckets/{BUCKET}/{key}", f"/buckets/{BUCKET}/probe/",
             "/", "/dir/assign", "/dir/lookup?volumeId=1", "/dir/status", "/vol/status",
             *[f"/{fid}" for fid in fids]]
    ports = infra["s3"]["ports"]
    assert len(ports) == 8 and "s3" in ports
    for name, port in ports.items():
        for path in paths:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=3)
            except httpx.TransportError:
                continue  # gRPC listeners drop plain HTTP
            assert marker not in resp.content, f"{name} port served the object to {path} unsigned"
            assert resp.status_code >= 400 or name == "master" and path == "/", (name, path, resp.status_code)


def test_if_none_match_creates_only_once(infra: dict) -> None:
    url = s3_url(infra, f"cas/{uuid.uuid4().hex}")
    first = signed(infra, "PUT", url, b"v1", headers={"If-None-Match": "*"})
    again = signed(infra, "PUT", url, b"v2", headers={"If-None-Match": "*"})
    assert (first.status_code, again.status_code) == (200, 412)
    assert signed(infra, "GET", url).content == b"v1"


async def test_if_match_is_a_compare_and_swap_under_concurrent_writers(infra: dict) -> None:
    url = s3_url(infra, f"cas/{uuid.uuid4().hex}")
    etag = signed(infra, "PUT", url, b"watermark-0").headers["etag"]
    assert signed(infra, "PUT", url, b"stale", headers={"If-Match": '"0123456789abcdef"'}).status_code == 412

    async def claim(client: httpx.AsyncClient, body: bytes) -> int:
        h = signed_headers("PUT", url, infra["s3"]["access_key"], infra["s3"]["secret_key"], body,
                           {"If-Match": etag})
        return (await client.put(url, content=body, headers=h)).status_code

    for round_ in range(3):
        bodies = [f"watermark-{round_ + 1}-{writer}".encode() for writer in range(8)]
        async with httpx.AsyncClient(timeout=10) as client:
            codes = await asyncio.gather(*(claim(client, body) for body in bodies))
        assert sorted(codes) == [200] + [412] * 7, codes
        winner = signed(infra, "GET", url)
        assert winner.content == bodies[codes.index(200)]
        etag = winner.headers["etag"]


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS


def grpc_answer(port: int, tls: ssl.SSLContext | None) -> bytes:
    """What a gRPC port sends back to an HTTP/2 client hello (its SETTINGS frame if it talks)."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as raw:
        sock = tls.wrap_socket(raw) if tls else raw
        sock.sendall(H2_PREFACE)
        return sock.recv(64)


def client_tls(cert: tuple[Path, Path] | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    if cert:
        ctx.load_cert_chain(*cert)
    return ctx


def test_grpc_ports_talk_only_to_holders_of_the_stack_certificate(embedded: dict, tmp_path: Path) -> None:
    infra = embedded
    tls = Path(infra["s3"]["home"]) / "tls"
    ours = (tls / "node.crt", tls / "node.key")
    stranger = (tmp_path / "s.crt", tmp_path / "s.key")  # self-signed: right shape, wrong CA
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(stranger[1]),
                    "-out", str(stranger[0]), "-days", "1", "-subj", "/CN=radcurate-local-s3"],
                   check=True, capture_output=True)
    grpc_ports = {name: port for name, port in infra["s3"]["ports"].items() if name.endswith("_grpc")}
    assert len(grpc_ports) == 4
    for name, port in grpc_ports.items():
        assert grpc_answer(port, client_tls(ours))[3:4] == b"\x04", f"{name}: no SETTINGS frame for our own client"
        for ctx in (client_tls(None), client_tls(stranger)):  # no certificate; one from another CA
            with pytest.raises((ssl.SSLError, ConnectionError)):
                grpc_answer(port, ctx)
        try:
            plain = grpc_answer(port, None)
        except ConnectionError:
            plain = b""
        assert plain[3:4] != b"\x04", f"{name} answered plaintext HTTP/2"
