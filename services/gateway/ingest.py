"""Ingest: one code path for the HTTP endpoint and `radcurate ingest`.

Each DICOM is validated with pydicom, checked for identifying data, stored in the object store
under its sha256, and the study with its report is recorded together with the report-ingested
event (outbox) in one transaction. Ingesting the same study again changes nothing.
"""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass, field

import psycopg
import pydicom
from psycopg_pool import AsyncConnectionPool
from pydicom.errors import InvalidDicomError

from services.common import outbox
from services.common.contracts import DicomObject, ReportIngested
from services.common.protocols import DEFAULT_PROTOCOL
from services.common.db import unit_of_work
from services.common.identifiers import is_dicom_uid, is_study_id
from services.common.objectstore import ObjectStore, content_key, sha256_hex
from services.gateway import deid


class IngestError(ValueError):
    """The study cannot be ingested; the message says why. Nothing was stored."""


@dataclass
class IngestResult:
    study_id: str
    status: str  # "ingested" | "duplicate"
    objects: list[DicomObject] = field(default_factory=list)
    scrubbed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ParsedInstance:
    data: bytes
    obj: DicomObject
    study_instance_uid: str


def parse_instance(name: str, data: bytes, *, scrub: bool) -> tuple[ParsedInstance, list[str]]:
    """Validate one DICOM file; scrub or reject identifying data. Raises IngestError."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, TypeError, AttributeError, OSError) as exc:
        raise IngestError(f"{name}: not a readable DICOM file ({exc.__class__.__name__}: {exc})") from exc
    missing = [kw for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality") if kw not in ds]
    if missing or "PixelData" not in ds:
        raise IngestError(f"{name}: DICOM lacks {', '.join(missing or ['PixelData'])}")
    found = deid.identifying_attributes(ds)
    removed: list[str] = []
    if found and not scrub:
        raise IngestError(f"{name}: carries identifying data ({', '.join(found)}); de-identify it or ingest with scrub")
    if found:
        removed = deid.scrub(ds)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        data = buf.getvalue()
    digest = sha256_hex(data)
    obj = DicomObject(
        object_key=content_key(data), sha256=digest, sop_instance_uid=str(ds.SOPInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID), series_description=str(ds.get("SeriesDescription", "")),
        instance_number=int(ds.get("InstanceNumber", 1) or 1), modality=str(ds.Modality),
        pixel_spacing=_pixel_spacing(ds),
    )
    return ParsedInstance(data, obj, str(ds.StudyInstanceUID)), removed


def _pixel_spacing(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm, or None when absent or malformed (CXR files often lack it;
    grading consensus needs it to average reader points in millimetres)."""
    try:
        row, col = (float(v) for v in ds.get("PixelSpacing") or ())
    except (TypeError, ValueError):
        return None
    return (row, col) if row > 0 and col > 0 else None


def validate_study(study_id: str, patient_id: str, report: str, files: list[tuple[str, bytes]],
                   scrub: bool) -> tuple[list[ParsedInstance], list[str]]:
    if not study_id.strip():
        raise IngestError("study_id is empty")
    if not patient_id.strip():
        raise IngestError(f"{study_id}: patient_id is empty")
    if not report.strip():
        raise IngestError(f"{study_id}: the report text is empty")
    if not files:
        raise IngestError(f"{study_id}: no DICOM files")
    parsed, removed = [], []
    for name, data in files:
        inst, rem = parse_instance(name, data, scrub=scrub)
        parsed.append(inst)
        removed += rem
    if len({p.study_instance_uid for p in parsed}) > 1:
        raise IngestError(f"{study_id}: files belong to more than one StudyInstanceUID")
    for p in parsed:  # UIDs become object keys and export paths: no separators, no '..'
        bad = [uid for uid in (p.study_instance_uid, p.obj.series_instance_uid, p.obj.sop_instance_uid)
               if not is_dicom_uid(uid)]
        if bad:
            raise IngestError(f"{study_id}: not a valid DICOM UID: {bad[0][:80]!r}")
    return parsed, sorted(set(removed))


async def ingest_study(pool: AsyncConnectionPool, store: ObjectStore, bucket: str, *, study_id: str,
                       patient_id: str, report: str, files: list[tuple[str, bytes]], scrub: bool = False,
                       protocol: str = DEFAULT_PROTOCOL) -> IngestResult:
    """Validate, store and announce one study. Raises IngestError (nothing stored) on bad input."""
    if not is_study_id(study_id):
        raise IngestError(f"study_id {study_id[:80]!r} is not allowed: use letters, digits, '.', '_' and '-'"
                          " (starting with a letter or digit, no '..', at most 128 characters)")
    parsed, removed = await asyncio.to_thread(validate_study, study_id, patient_id, report, files, scrub)
    async with pool.connection() as conn:
        if await _exists(conn, study_id):
            return IngestResult(study_id, "duplicate")
    # Objects first: a crash after this leaves unreferenced (content-addressed) objects, never a
    # study row pointing at missing bytes.
    await asyncio.to_thread(_store_all, store, bucket, parsed)
    objects = [p.obj for p in parsed]
    event = ReportIngested(study_id=study_id, patient_id=patient_id, protocol=protocol,
                           study_instance_uid=parsed[0].study_instance_uid, report_text=report, objects=objects)
    async with unit_of_work(pool) as conn:
        cur = await conn.execute(
            "INSERT INTO studies (study_id, patient_id, protocol, study_instance_uid, report_text, correlation_id)"
            " VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (study_id) DO NOTHING RETURNING study_id",
            (study_id, patient_id, protocol, event.study_instance_uid, report, event.correlation_id))
        if await cur.fetchone() is None:
            return IngestResult(study_id, "duplicate")
        await _insert_objects(conn, study_id, objects)
        await outbox.record(conn, [event])
    return IngestResult(study_id, "ingested", objects, removed)


def _store_all(store: ObjectStore, bucket: str, parsed: list[ParsedInstance]) -> None:
    for p in parsed:
        store.put_content_addressed(bucket, p.data)


async def _exists(conn: psycopg.AsyncConnection, study_id: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM studies WHERE study_id = %s", (study_id,))
    return await cur.fetchone() is not None


async def _insert_objects(conn: psycopg.AsyncConnection, study_id: str, objects: list[DicomObject]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO study_objects (study_id, sop_instance_uid, series_instance_uid, series_description,"
            " instance_number, modality, object_key, sha256, pixel_spacing) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)"
            " ON CONFLICT DO NOTHING",
            [(study_id, o.sop_instance_uid, o.series_instance_uid, o.series_description, o.instance_number,
              o.modality, o.object_key, o.sha256, json.dumps(o.pixel_spacing) if o.pixel_spacing else None)
             for o in objects])
