"""`radcurate ingest DIR`: bulk ingestion through the gateway's ingest endpoint (`POST /api/v1/studies`).

DIR holds `reports.csv` (study_id, patient_id, report) and `dicom/<study_id>.dcm` or
`dicom/<study_id>/**/*.dcm`. Each study is one request: a study the gateway refuses (its
problem+json detail) is reported and skipped, the rest go in. The CLI holds no database or
object-store credentials for this: the gateway applies its own bounds, checks and secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

from radcurate.client import Gateway, GatewayError
from services.common.contracts import Protocol

csv.field_size_limit(sys.maxsize)
# A study's request may wait behind others' decode checks in the gateway (~0.5 s per JPEG 2000 object).
STUDY_TIMEOUT_SECONDS = 600
# What the gateway answers for a study it refuses (bad input, over a bound): the study is skipped.
REFUSED = {413, 422}


class FolderError(ValueError):
    """The folder itself is not a study folder (no reports.csv, missing columns)."""


@dataclass
class IngestSummary:
    ingested: int = 0
    duplicates: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)


def study_paths(data_dir: Path, study_id: str) -> list[tuple[str, Path]]:
    """The study's DICOM files as (name, path): ingest reads them one at a time."""
    single = data_dir / "dicom" / f"{study_id}.dcm"
    if single.exists():
        return [(single.name, single)]
    folder = data_dir / "dicom" / study_id
    if folder.is_dir():
        return [(str(p.relative_to(folder)), p) for p in sorted(folder.rglob("*")) if p.is_file()]
    return []


def study_files(data_dir: Path, study_id: str) -> list[tuple[str, bytes]]:
    """The study's DICOM files read into memory (for tests and small studies)."""
    return [(name, path.read_bytes()) for name, path in study_paths(data_dir, study_id)]


def read_reports(data_dir: Path) -> list[dict[str, str]]:
    path = data_dir / "reports.csv"
    if not path.exists():
        raise FolderError(f"{path} not found: a study folder needs reports.csv (study_id, patient_id, report)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"study_id", "patient_id", "report"} - set(reader.fieldnames or [])
        if missing:
            raise FolderError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        return list(reader)


async def ingest_dir(data_dir: Path, api: Gateway, *, scrub: bool = False, concurrency: int = 8,
                     protocol: str = Protocol.CXR, progress=None, allow_burned_in: bool = False) -> IngestSummary:
    """Ingest every study of the folder through the gateway API (`api` a curator's client).
    `allow_burned_in` is the curator's override for objects marked BurnedInAnnotation YES. A study
    the gateway refuses is listed in `rejected`; any other HTTP error (no access, gateway down)
    raises GatewayError."""
    rows = read_reports(data_dir)
    summary = IngestSummary()
    gate = asyncio.Semaphore(concurrency)

    async def one(row: dict[str, str]) -> None:
        async with gate:
            sid, paths = row["study_id"], study_paths(data_dir, row["study_id"])
            try:
                if reason := _unsendable(sid, row, paths):
                    raise GatewayError(422, {"detail": reason})
                status = await _post_study(api, row, paths, protocol=protocol, scrub=scrub,
                                           allow_burned_in=allow_burned_in)
            except GatewayError as exc:
                if exc.status not in REFUSED:
                    raise
                summary.rejected.append((sid, str(exc.problem.get("detail", exc))))
                if progress:
                    progress(summary)
                return
            if status == "duplicate":
                summary.duplicates += 1
            else:
                summary.ingested += 1
            if progress:
                progress(summary)

    await asyncio.gather(*(one(r) for r in rows))
    summary.rejected.sort()
    return summary


def _unsendable(sid: str, row: dict[str, str], paths: list[tuple[str, Path]]) -> str | None:
    """Why a row cannot be one request, in the gateway's words. A multipart form has no empty
    field (the endpoint would answer only "Field required"), and the endpoint requires files."""
    if not paths:
        return f"{sid}: no DICOM files (dicom/{sid}.dcm or dicom/{sid}/)"
    if not row["patient_id"].strip():
        return f"{sid}: patient_id is empty"
    if not row["report"].strip():
        return f"{sid}: the report text is empty"
    return None


async def _post_study(api: Gateway, row: dict[str, str], paths: list[tuple[str, Path]], *, protocol: str,
                      scrub: bool, allow_burned_in: bool) -> str:
    """One study as one multipart request; its files are streamed from disk, never read whole.
    The gateway's answer: "ingested" or "duplicate"."""
    sid = row["study_id"]
    form = {"study_id": sid, "patient_id": row["patient_id"], "report": row["report"], "protocol": str(protocol),
            "scrub": str(scrub).lower(), "allow_burned_in_annotation": str(allow_burned_in).lower()}
    with contextlib.ExitStack() as files:
        parts = [("files", (name, files.enter_context(open(path, "rb")), "application/dicom"))
                 for name, path in paths]
        resp = await api.request("POST", "/api/v1/studies", data=form, files=parts, timeout=STUDY_TIMEOUT_SECONDS)
    return str(resp.json()["status"])
