"""`radcurate ingest DIR`: bulk ingestion through the gateway's own ingest code.

DIR holds `reports.csv` (study_id, patient_id, report) and `dicom/<study_id>.dcm` or
`dicom/<study_id>/**/*.dcm`. Each study is ingested on its own: a bad study is reported and
skipped, the rest go in.
"""

from __future__ import annotations

import asyncio
import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

from psycopg_pool import AsyncConnectionPool

from services.common.contracts import Protocol
from services.common.objectstore import ObjectStore
from services.gateway.ingest import IngestError, IngestLimits, ingest_study

csv.field_size_limit(sys.maxsize)


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
        raise IngestError(f"{path} not found: a study folder needs reports.csv (study_id, patient_id, report)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"study_id", "patient_id", "report"} - set(reader.fieldnames or [])
        if missing:
            raise IngestError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        return list(reader)


async def ingest_dir(data_dir: Path, pool: AsyncConnectionPool, store: ObjectStore, bucket: str, *,
                     scrub: bool = False, concurrency: int = 8, protocol: Protocol = Protocol.CXR,
                     progress=None, limits: IngestLimits | None = None,
                     allow_burned_in: bool = False) -> IngestSummary:
    """Ingest every study of the folder; `limits` default to the RADCURATE_GATEWAY_* settings.
    `allow_burned_in` is the curator's override for objects marked BurnedInAnnotation YES."""
    rows = read_reports(data_dir)
    limits = limits or IngestLimits()
    summary = IngestSummary()
    gate = asyncio.Semaphore(concurrency)

    async def one(row: dict[str, str]) -> None:
        async with gate:
            sid = row["study_id"]
            try:
                files = study_paths(data_dir, sid)  # paths: files stream, a study is never read whole
                result = await ingest_study(pool, store, bucket, study_id=sid, patient_id=row["patient_id"],
                                            report=row["report"], files=files, scrub=scrub, protocol=protocol,
                                            limits=limits, allow_burned_in=allow_burned_in)
            except IngestError as exc:
                summary.rejected.append((sid, str(exc)))
                if progress:
                    progress(summary)
                return
            if result.status == "duplicate":
                summary.duplicates += 1
            else:
                summary.ingested += 1
            if progress:
                progress(summary)

    await asyncio.gather(*(one(r) for r in rows))
    summary.rejected.sort()
    return summary
