"""The bulk ingest client's multipart body (radcurate.bulk_ingest.MultipartBody): sent in ~1 MiB
blocks, its declared length exact, and read back by the gateway's own form parser (Starlette's)
as the fields and files it was given, names escaped as httpx escapes them."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import httpx
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser

from radcurate.bulk_ingest import MultipartBody


async def collect(body: MultipartBody) -> list[bytes]:
    return [chunk async for chunk in body.chunks()]


async def parse(content_type: str, blocks: list[bytes]) -> list[tuple[str, str | tuple[str, bytes]]]:
    async def stream():  # type: ignore[no-untyped-def]
        for block in blocks:
            yield block

    headers = Headers({"content-type": content_type, "content-length": str(sum(map(len, blocks)))})
    form = await MultiPartParser(headers, stream(), max_files=100).parse()
    out: list[tuple[str, str | tuple[str, bytes]]] = []
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            out.append((key, (value.filename or "", await value.read())))
        else:
            out.append((key, value))
    return out


def test_fields_and_files_arrive_whole_in_order_with_their_names(tmp_path: Path) -> None:
    sizes = {"a.dcm": 130_000, 'odd "name"\\x.dcm': 0, "series 1/img.dcm": 2_500_000, "last.dcm": 7}
    files = []
    for i, (name, size) in enumerate(sizes.items()):
        path = tmp_path / f"f{i}"
        path.write_bytes(os.urandom(size))
        files.append((name, path))
    fields = {"studies": '[{"study_id": "S1", "files": 4}]', "scrub": "false", "protocol": "cxr"}
    body = MultipartBody(fields, files)
    blocks = asyncio.run(collect(body))
    assert sum(map(len, blocks)) == body.length
    assert len(blocks) == 3 and all(len(b) >= MultipartBody.BLOCK for b in blocks[:-1])  # ~2.6 MB in 1 MiB blocks
    parsed = asyncio.run(parse(body.content_type, blocks))
    assert [k for k, _ in parsed] == [*fields, "files", "files", "files", "files"]
    assert parsed[:3] == list(fields.items())
    assert [content for _, (_, content) in parsed[3:]] == [path.read_bytes() for _, path in files]
    # what httpx's own encoder sent, read by the same parser (names escaped alike)
    with contextlib.ExitStack() as opened:
        request = httpx.Request("POST", "http://gateway/api/v1/studies/batch", data=fields, files=[
            ("files", (name, opened.enter_context(open(path, "rb")), "application/dicom")) for name, path in files])
        sent_by_httpx = request.read()
    assert asyncio.run(parse(request.headers["content-type"], [sent_by_httpx])) == parsed


def test_a_file_that_shrank_after_its_size_was_taken_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    body = MultipartBody({}, [("f.dcm", path)])
    path.write_bytes(b"x" * 10)
    try:
        asyncio.run(collect(body))
    except ValueError as exc:
        assert "shrank" in str(exc)
    else:
        raise AssertionError("a shrunk file was sent")
