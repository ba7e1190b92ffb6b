"""`radcurate ingest DIR`: bulk ingestion through the gateway's batch ingest endpoint (`POST /api/v1/studies/batch`).

DIR holds `reports.csv` (study_id, patient_id, report) and `dicom/<study_id>.dcm` or
`dicom/<study_id>/**/*.dcm`. Studies travel in batches (up to BATCH_STUDIES studies and
BATCH_BYTES of files per request, a larger study alone), several requests at a time; the gateway
ingests each study of a batch as its own request would be: a study it refuses (the reason its
problem+json would give) is reported and skipped, the rest go in. The CLI holds no database or
object-store credentials for this: the gateway applies its own bounds, checks and secrets.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from radcurate.client import Gateway, GatewayError
from services.common.contracts import Protocol

csv.field_size_limit(sys.maxsize)
# A batch's request may wait behind others' decode checks in the gateway (~0.5 s per JPEG 2000 object).
STUDY_TIMEOUT_SECONDS = 600
# What the gateway answers for a study it refuses (bad input, over a bound, a conflict with a
# stored study): the study is listed with the reason and skipped.
REFUSED = {409, 413, 422}
# One request carries up to this many studies and bytes of files (a larger study goes alone): few
# enough that a batch's files, spooled by the gateway, stay small, many enough that the per-request
# cost (HTTP, routing, authentication) is spread thin.
BATCH_STUDIES = 32
BATCH_BYTES = 16 * 2**20
# Batches in flight at once (the gateway ingests a batch's studies concurrently too).
BATCH_REQUESTS = 3


class FolderError(ValueError):
    """The folder itself is not a study folder (no reports.csv, missing columns)."""


@dataclass
class IngestSummary:
    ingested: int = 0
    duplicates: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)


# What a study's folder holds besides its images when it is a DICOM media export or was copied by a
# desktop: the media's index (PS3.10 names it DICOMDIR) and the file managers' own files. Each
# would fail the whole study at the gateway ("DICOM lacks ..."), so they are not sent.
_NOT_IMAGES = frozenset({"dicomdir", "thumbs.db", "desktop.ini", "__macosx"})


def study_paths(data_dir: Path, study_id: str) -> list[tuple[str, Path]]:
    """The study's DICOM files as (name, path): ingest reads them one at a time. In a study's
    folder, hidden files and folders (".DS_Store", "._IM0001"), DICOMDIR and desktop files are left out."""
    single = data_dir / "dicom" / f"{study_id}.dcm"
    if single.exists():
        return [(single.name, single)]
    folder = data_dir / "dicom" / study_id
    if folder.is_dir():
        return [(str(p.relative_to(folder)), p) for p in sorted(folder.rglob("*"))
                if p.is_file() and not _not_an_image(p.relative_to(folder))]
    return []


def _not_an_image(relative: Path) -> bool:
    return any(part.startswith(".") or part.lower() in _NOT_IMAGES for part in relative.parts)


def study_files(data_dir: Path, study_id: str) -> list[tuple[str, bytes]]:
    """The study's DICOM files read into memory (for tests and small studies)."""
    return [(name, path.read_bytes()) for name, path in study_paths(data_dir, study_id)]


def read_reports(data_dir: Path) -> list[dict[str, str]]:
    """reports.csv's rows, as a spreadsheet writes it: UTF-8 with or without the byte-order mark
    that Excel's "CSV UTF-8" puts first (it would otherwise be part of the first column's name),
    rows that are only separators (",,", left by cleared cells) skipped, a short row's missing
    fields empty (the study is then refused for what is missing), ids without surrounding blanks."""
    path = data_dir / "reports.csv"
    if not path.exists():
        raise FolderError(f"{path} not found: a study folder needs reports.csv (study_id, patient_id, report)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, restval="")
            missing = {"study_id", "patient_id", "report"} - set(reader.fieldnames or [])
            if missing:
                raise FolderError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
            rows = [row for row in reader if any((v or "").strip() for k, v in row.items() if k is not None)]
    except UnicodeDecodeError as exc:
        raise FolderError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} is not UTF-8);"
                          " save it as CSV UTF-8") from exc
    except csv.Error as exc:
        raise FolderError(f"{path}: {exc}") from exc
    for row in rows:
        row["study_id"], row["patient_id"] = row["study_id"].strip(), row["patient_id"].strip()
    return rows


async def ingest_dir(data_dir: Path, api: Gateway, *, scrub: bool = False, concurrency: int = BATCH_REQUESTS,
                     protocol: str = Protocol.CXR, progress=None, allow_burned_in: bool = False) -> IngestSummary:
    """Ingest every study of the folder through the gateway API (`api` a curator's client), in
    batches (`POST /api/v1/studies/batch`, `concurrency` of them at a time). `allow_burned_in` is
    the curator's override for objects marked BurnedInAnnotation YES. A study the gateway refuses
    is listed in `rejected` with its reason; any other HTTP error (no access, gateway down) raises
    GatewayError."""
    rows = read_reports(data_dir)
    summary = IngestSummary()
    gate = asyncio.Semaphore(concurrency)

    def count(outcome: str, sid: str = "", reason: str = "") -> None:
        if outcome == "refused":
            summary.rejected.append((sid, reason))
        elif outcome == "duplicate":
            summary.duplicates += 1
        else:
            summary.ingested += 1

    async def send(batch: list[tuple[dict[str, str], list[tuple[str, Path]]]]) -> None:
        async with gate:
            outcomes = await _post_batch(api, batch, protocol=protocol, scrub=scrub, allow_burned_in=allow_burned_in)
        for o in outcomes:
            count(o["status"], o["study_id"], o.get("detail") or "")
        if progress:
            progress(summary)

    batches: list[list[tuple[dict[str, str], list[tuple[str, Path]]]]] = [[]]
    size = 0
    for row in rows:
        sid, paths = row["study_id"], study_paths(data_dir, row["study_id"])
        if reason := _unsendable(sid, row, paths):
            count("refused", sid, reason)
            continue
        study_bytes = sum(p.stat().st_size for _, p in paths)
        if batches[-1] and (len(batches[-1]) >= BATCH_STUDIES or size + study_bytes > BATCH_BYTES):
            batches.append([])
            size = 0
        batches[-1].append((row, paths))
        size += study_bytes
    if progress and summary.rejected:
        progress(summary)
    await asyncio.gather(*(send(b) for b in batches if b))
    summary.rejected.sort()
    return summary


def _unsendable(sid: str, row: dict[str, str], paths: list[tuple[str, Path]]) -> str | None:
    """Why a row cannot be sent, in the gateway's words (it would refuse the study for it)."""
    if not sid:  # dicom/<empty>/ is the whole dicom folder: never send it as one study
        return "a row has an empty study_id"
    if not paths:
        return f"{sid}: no DICOM files (dicom/{sid}.dcm or dicom/{sid}/)"
    if not row["patient_id"].strip():
        return f"{sid}: patient_id is empty"
    if not row["report"].strip():
        return f"{sid}: the report text is empty"
    return None


async def _post_batch(api: Gateway, batch: list[tuple[dict[str, str], list[tuple[str, Path]]]], *, protocol: str,
                      scrub: bool, allow_burned_in: bool) -> list[dict]:
    """Several studies as one multipart request; their files are streamed from disk, never read
    whole. The gateway's outcome per study: ingested, duplicate, or refused with its reason."""
    studies = [{"study_id": row["study_id"], "patient_id": row["patient_id"], "report": row["report"],
                "files": len(paths)} for row, paths in batch]
    form = {"studies": json.dumps(studies), "protocol": str(protocol), "scrub": str(scrub).lower(),
            "allow_burned_in_annotation": str(allow_burned_in).lower()}
    body = MultipartBody(form, [(name, path) for _, paths in batch for name, path in paths])
    resp = await api.request("POST", "/api/v1/studies/batch", content=body.chunks(), timeout=STUDY_TIMEOUT_SECONDS,
                             headers={"Content-Type": body.content_type, "Content-Length": str(body.length)})
    outcomes = resp.json()["studies"]
    for o in outcomes:
        if o["status"] == "refused" and o["http_status"] not in REFUSED:
            raise GatewayError(o["http_status"], {"detail": o.get("detail")})
    return list(outcomes)


# A form parameter's value as browsers (and httpx) write it in a part's header: the quote, the
# backslash and control characters escaped (WHATWG HTML, multipart/form-data encoding).
_FORM_PARAM_ESCAPES = {'"': "%22", "\\": "\\\\", **{chr(c): f"%{c:02X}" for c in range(0x20) if c != 0x1B}}
_FORM_PARAM_RE = re.compile("|".join(re.escape(c) for c in _FORM_PARAM_ESCAPES))


def _form_param(name: str, value: str) -> str:
    return f'{name}="{_FORM_PARAM_RE.sub(lambda m: _FORM_PARAM_ESCAPES[m.group(0)], value)}"'


class MultipartBody:
    """A multipart/form-data body of text fields and files, sent in blocks of about BLOCK bytes.

    httpx's multipart encoder wrote each part's head, and each 64 KiB of a file, as its own write
    through httpcore and anyio (a timeout scope and task lookup per write): about half of the bulk
    client's CPU per study (issue 15 §2). Here the parts' heads and the files' bytes go out in
    ~1 MiB blocks; a file is still read a block at a time, never whole. The length is known before
    sending (each file's size), so the request carries a Content-Length as httpx's did."""

    BLOCK = 1 << 20

    def __init__(self, fields: dict[str, str], files: list[tuple[str, Path]]) -> None:
        self.boundary = os.urandom(16).hex()
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        self._fields = b"".join(
            f"--{self.boundary}\r\nContent-Disposition: form-data; {_form_param('name', k)}\r\n\r\n".encode()
            + v.encode() + b"\r\n" for k, v in fields.items())
        self._files = [(f"--{self.boundary}\r\nContent-Disposition: form-data; {_form_param('name', 'files')}; "
                        f"{_form_param('filename', name)}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
                        path, path.stat().st_size) for name, path in files]
        self._end = f"--{self.boundary}--\r\n".encode()
        self.length = (len(self._fields) + sum(len(head) + size + 2 for head, _, size in self._files)
                       + len(self._end))

    async def chunks(self) -> AsyncIterator[bytes]:
        block = bytearray(self._fields)
        for head, path, size in self._files:
            block += head
            with open(path, "rb") as fp:
                left = size
                while left:
                    data = fp.read(min(left, max(self.BLOCK - len(block), 1 << 16)))
                    if not data:
                        raise FolderError(f"{path}: the file shrank while it was sent ({size - left} of {size} bytes)")
                    block += data
                    left -= len(data)
                    if len(block) >= self.BLOCK:
                        yield bytes(block)
                        block.clear()
            block += b"\r\n"
        block += self._end
        yield bytes(block)
