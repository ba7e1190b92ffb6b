"""Ingest: one code path for the HTTP endpoint and `radcurate ingest`.

Each DICOM is validated with pydicom (that it can be shown: a transfer syntax, photometric
interpretation and bit depth the renderer decodes, and sizes within the limits, all read from the
header before anything is decoded; the plain header values straight off the undecoded elements,
dicom_header, with pydicom's own decoding for everything else), its pixels digested
(pixel_digest: decoded frame by frame, within those limits), checked for identifying data,
stored in the object store under its sha256, and the study with its report is recorded together
with the report-ingested event (outbox) in one transaction. Ingesting the same study again changes nothing.

Files stream: a source is bytes, a path or an open binary file, read one at a time, so a study of
many large files is never held in memory whole (only the file being checked, once, and one
decoded frame of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import io
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import BinaryIO

import psycopg
import pydicom
from psycopg_pool import AsyncConnectionPool
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.pixels.utils import get_expected_length

from services.common import deid, manifests, outbox
from services.common.contracts import DicomObject, ReportIngested
from services.common.db import unit_of_work
from services.common.identifiers import is_dicom_uid, is_study_id, normalise_patient_id, patient_key
from services.common.objectstore import ObjectStore, digest_key
from services.common.pacs_pairing import pseudonym
from services.common.protocols import DEFAULT_PROTOCOL
from services.gateway import dicom_header as header
from services.gateway.pixel_digest import PixelDecodeError, pixel_digest
from services.gateway.render import COLOUR, PHOTOMETRIC, RenderError, decode, decoding_plugin, shown_frame
from services.gateway.repo import studies

FileSource = bytes | Path | BinaryIO
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # a DICOMDIR
NOT_PART10 = ("no 'DICM' file meta header after a 128-byte preamble: not DICOM, or a bare data set"
              " that must be re-exported as a DICOM file")
_CHUNK = 1 << 20
_IN_MEMORY_MAX = 2 << 20  # bytes of an object read whole before parsing (larger ones stream)


class IngestLimits(BaseSettings):
    """Bounds checked on every object before anything is decoded (decompression bombs): the
    gateway's settings carry them (RADCURATE_GATEWAY_MAX_OBJECT_BYTES, ..._MAX_PIXELS), and
    `radcurate ingest` reads the same variables."""

    model_config = SettingsConfigDict(env_prefix="RADCURATE_GATEWAY_", extra="ignore")

    max_object_bytes: int = 256 * 2**20  # one DICOM file
    max_pixels: int = 2**28  # Rows × Columns × NumberOfFrames of one object (268 M)
    # Decode the shown frame of every compressed object at ingest, so a corrupt or undecodable
    # stream is refused then, not found by a reader (costs ~0.5 s per JPEG 2000 chest radiograph);
    # and decode all its frames for the pixel digest (pixel_digest). Off, a compressed object has no
    # pixel digest (only its UIDs and file hash guard the split); native data is always digested.
    verify_decode: bool = True


class IngestError(ValueError):
    """The study cannot be ingested; the message says why. Nothing was stored."""


class TooLarge(IngestError):
    """An object is over a bound of IngestLimits (HTTP 413)."""


class PatientMismatch(IngestError):
    """The form's patient id and the PatientID of a file stored as it is disagree, or one study's
    files name two patients (HTTP 422: the request contradicts itself, whatever is stored)."""


class IngestConflict(IngestError):
    """The request is sound alone but conflicts with a stored study (HTTP 409)."""


class PatientConflict(IngestConflict):
    """The files' patient is already ingested under another patient id."""


class SharedImages(IngestConflict):
    """The files' StudyInstanceUID, a SOP Instance UID or an image's pixels are already another
    study's (the same images under two study ids: holdout contamination)."""


@dataclass
class IngestResult:
    study_id: str
    status: str  # "ingested" | "duplicate"
    objects: list[DicomObject] = field(default_factory=list)
    scrubbed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ParsedInstance:
    source: FileSource  # what is stored: the original, or the scrubbed rewrite
    length: int
    obj: DicomObject
    study_instance_uid: str
    facts: dict = field(default_factory=dict)  # study facts for the reader: see study_facts
    # The patient as the DICOM names it, read before de-identification: a keyed digest of its
    # normalised PatientID (None: no PatientID).
    patient_key: str | None = None

    @property
    def data(self) -> bytes:
        """The bytes to store (reads a path or file source: for tests and small objects)."""
        with open_source(self.source) as fp:
            return fp.read()


@contextlib.contextmanager
def open_source(source: FileSource) -> Iterator[BinaryIO]:
    """A readable binary file positioned at the start of the source."""
    if isinstance(source, bytes | bytearray | memoryview):
        yield io.BytesIO(source)
    elif isinstance(source, Path):
        with open(source, "rb") as fp:
            yield fp
    else:
        source.seek(0)
        yield source


def source_size(source: FileSource) -> int:
    if isinstance(source, bytes | bytearray | memoryview):
        return len(source)
    if isinstance(source, Path):
        return source.stat().st_size
    source.seek(0, io.SEEK_END)
    size = source.tell()
    source.seek(0)
    return size


def _sha256(fp: BinaryIO) -> str:
    digest = hashlib.sha256()
    fp.seek(0)
    while chunk := fp.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def parse_instance(name: str, data: FileSource, *, scrub: bool, limits: IngestLimits | None = None,
                   patient_id: str = "", allow_burned_in: bool = False) -> tuple[ParsedInstance, list[str]]:
    """Validate one DICOM file; de-identify it (scrub: the PS3.15 Basic Profile, services.common.deid,
    PatientID becoming `patient_id`) or reject what the profile would not let through. Raises
    IngestError."""
    limits = limits or IngestLimits()
    size = source_size(data)
    if size > limits.max_object_bytes:
        raise TooLarge(f"{name}: {size} bytes is over the limit of {limits.max_object_bytes} bytes per object")
    with open_source(data) as fp:
        # A small object is read once into memory: pydicom then parses a BytesIO (not a hundred
        # small reads through the spooled upload's Python wrapper) and the file digest is taken
        # over the same bytes without reading the file again. A large one streams, as before.
        whole = fp.read() if size <= _IN_MEMORY_MAX else None
        try:
            ds = pydicom.dcmread(io.BytesIO(whole) if whole is not None else fp)
        except (InvalidDicomError, EOFError, ValueError, TypeError, AttributeError, OSError, KeyError) as exc:
            # pydicom's own wording for a file without its header tells a programmer to pass force=True
            why = NOT_PART10 if isinstance(exc, InvalidDicomError) and "DICM" in str(exc) \
                else f"{exc.__class__.__name__}: {exc}"
            raise IngestError(f"{name}: not a readable DICOM file ({why})") from exc
        if ds.file_meta.get("MediaStorageSOPClassUID") == MEDIA_STORAGE_DIRECTORY:
            raise IngestError(f"{name}: a DICOMDIR (the index of a DICOM media export), not an image: leave it out")
        missing = [kw for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality") if kw not in ds]
        if missing or "PixelData" not in ds:
            what = "float pixel data (not supported)" if {"FloatPixelData", "DoubleFloatPixelData"} & set(ds.dir()) \
                else "PixelData"
            raise IngestError(f"{name}: DICOM lacks {', '.join(missing or [what])}")
        check_displayable(name, ds, limits)
        pixels = _check_pixels(name, ds, limits)
        dicom_patient = _patient_id_of(ds)  # before de-identification replaces it
        key = patient_key(dicom_patient, deid_secret())
        burned_in = header.text(ds, "BurnedInAnnotation").upper() == "YES"
        if burned_in and not allow_burned_in:
            raise IngestError(f"{name}: BurnedInAnnotation is YES (identifying text may be in the pixels); "
                              "refused unless a curator overrides (allow_burned_in_annotation)")
        removed: list[str] = []
        if not scrub:
            found = deid.violations(ds, allow_burned_in=True)
            if found:
                raise IngestError(f"{name}: carries identifying data ({', '.join(found[:8])}"
                                  f"{', ...' if len(found) > 8 else ''}) that the PS3.15 Basic Profile removes;"
                                  " de-identify it or ingest with scrub")
        # With scrub, the whole profile (UIDs and dates too) runs on every object not already
        # de-identified: one an upstream pipeline de-identified (it says so, and passes the check)
        # is stored byte for byte, its UIDs and dates not replaced or shifted a second time.
        rewrite = scrub and (header.text(ds, "PatientIdentityRemoved").upper() != "YES"
                             or bool(deid.violations(ds, allow_burned_in=True)))
        # An object stored as it is keeps its PatientID: it must name the form's patient. One
        # rewritten gets the form's id written in; the study-wide check (_refuse_second_patient_id)
        # covers it.
        if not rewrite and dicom_patient.strip() and patient_id.strip() and not same_patient(dicom_patient, patient_id):
            raise PatientMismatch(f"{name}: PatientID {dicom_patient.strip()!r} of this object (stored as it is)"
                                  f" is not the form's patient id {patient_id.strip()!r} (compared ignoring case,"
                                  " blanks and the leading zeros of a numeric id)")
        if rewrite:
            try:
                removed = deid.scrub(ds, secret=deid_secret(),
                                     patient_id=patient_id, allow_burned_in=allow_burned_in)
            except deid.DeidError as exc:
                raise IngestError(f"{name}: {exc}") from exc
            # The rewrite goes to a temporary file, not memory (a spooled one would copy the pixel
            # data twice more when it rolls over).
            rewritten = tempfile.TemporaryFile()  # noqa: SIM115 (owned by the result, closed when dropped)
            ds.save_as(rewritten, enforce_file_format=True)
            data, size = rewritten, rewritten.tell()
            digest = _sha256(rewritten)
        else:
            digest = hashlib.sha256(whole).hexdigest() if whole is not None else _sha256(fp)
    obj = DicomObject(
        object_key=digest_key(digest), sha256=digest, sop_instance_uid=header.text(ds, "SOPInstanceUID"),
        series_instance_uid=header.text(ds, "SeriesInstanceUID"),
        series_description=header.text(ds, "SeriesDescription"),
        instance_number=header.integer(ds, "InstanceNumber", 1), modality=header.text(ds, "Modality"),
        pixel_spacing=_pixel_spacing(ds), pixel_sha256=pixels, patient_key=key,
    )
    return ParsedInstance(data, size, obj, header.text(ds, "StudyInstanceUID"), study_facts(ds), key), removed


def deid_secret() -> str:
    """The project's de-identification secret (deid.DeidSettings), read again only when
    RADCURATE_DEID_SECRET changes: building the settings object per file cost ~0.2 ms."""
    return _secret_for(os.environ.get("RADCURATE_DEID_SECRET"))


@functools.lru_cache(maxsize=4)
def _secret_for(_: str | None) -> str:
    return deid.DeidSettings().secret.get_secret_value()


def _check_pixels(name: str, ds: pydicom.Dataset, limits: IngestLimits) -> str | None:
    """The object's pixel digest (None: a uniform image, or compressed with verify_decode off),
    after check_displayable has bounded its size. Pixels that cannot be decoded are refused: a
    reader could not see them, and an image whose content cannot be compared cannot be checked
    for contamination. A compressed object's shown frame is also rendered as the page would
    (decoded once, for both)."""
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax.is_compressed and not limits.verify_decode:
        return None
    keep, kept = shown_frame(ds), {}
    try:
        digest = pixel_digest(ds, on_frame=lambda n, frame: kept.setdefault(n, frame) if n == keep else None)
        if syntax.is_compressed:
            decode(ds, shown=kept.get(keep))
    except (PixelDecodeError, RenderError) as exc:
        raise IngestError(f"{name}: {syntax.name} pixel data: {exc}") from exc
    return digest


def same_patient(dicom_patient_id: str, form_patient_id: str) -> bool:
    """Whether the form names the patient an object names: the same id (normalised), or the
    pseudonym a PACS import derives from it (pacs_pairing.pseudonym)."""
    form = form_patient_id.strip()
    return normalise_patient_id(dicom_patient_id) == normalise_patient_id(form) or form == pseudonym(dicom_patient_id)


def _patient_id_of(ds: pydicom.Dataset) -> str:
    """PatientID as text ('' when absent); a multi-valued one (a malformed LO) joined as stored."""
    value = header.value(ds, "PatientID", "")  # a plain one read off its bytes, as Dataset.get gives it
    if isinstance(value, pydicom.multival.MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value or "")


FACTS = ("view_position", "patient_sex", "age_band", "study_date", "window_center", "window_width",
         "photometric_interpretation")


def _age_band(age: str) -> str | None:
    """PatientAge ('045Y', '006M') as a decade band ('40-49'); under a year, '0-9'. Over 89 is
    one band (HIPAA safe harbour): the exact age is never kept."""
    m = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY]?)\s*", age or "")
    if not m:
        return None
    years = int(m[1]) if m[2] in ("Y", "") else 0
    return "90+" if years >= 90 else f"{years // 10 * 10}-{years // 10 * 10 + 9}"


def study_facts(ds: pydicom.Dataset) -> dict:
    """What the reader is shown beside the image, from the (de-identified) header: the view
    (PA/AP/LL...), sex, an age band, the study date, and the file's own VOI window (the page
    places its window presets relative to it, mirrored for MONOCHROME1). A value that is absent or
    malformed is None."""
    def text(kw: str) -> str | None:
        value = str(header.value(ds, kw, "") or "").strip().upper()
        return value or None

    day = text("StudyDate")
    try:
        study_date = date(int(day[:4]), int(day[4:6]), int(day[6:8])) if day and len(day) == 8 else None
    except ValueError:
        study_date = None
    center = width = None
    try:
        if "WindowCenter" in ds and "WindowWidth" in ds:
            center, width = (float(v[0] if isinstance(v, pydicom.multival.MultiValue) else v)
                             for v in (header.value(ds, "WindowCenter"), header.value(ds, "WindowWidth")))
    except (TypeError, ValueError, IndexError):
        center = width = None
    if width is not None and width <= 0:
        center = width = None
    sex = text("PatientSex")
    return {"view_position": text("ViewPosition"), "patient_sex": sex if sex in ("F", "M", "O") else None,
            "age_band": _age_band(str(header.value(ds, "PatientAge", "") or "")), "study_date": study_date,
            "window_center": center, "window_width": width,
            "photometric_interpretation": text("PhotometricInterpretation")}


def check_displayable(name: str, ds: pydicom.Dataset, limits: IngestLimits) -> None:
    """Refuse (IngestError) what the reviewer page could not show, and what is over the limits,
    from the header alone: nothing is accepted that cannot be shown, nothing is decoded here."""
    def refuse(why: str) -> IngestError:
        return IngestError(f"{name}: {why}")

    if header.text(ds, "SOPClassUID") == SEGMENTATION_STORAGE:
        raise refuse("a Segmentation object is an annotation, not an image to read (SOP Class SEG)")
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is None:
        raise refuse("no Transfer Syntax UID in the file meta information")
    try:
        available = get_decoder(syntax).is_available and (
            not syntax.is_compressed or decoding_plugin(syntax) in get_decoder(syntax).available_plugins)
    except NotImplementedError:
        available = False
    if not available:
        raise refuse(f"transfer syntax {syntax.name} ({syntax}) cannot be decoded")
    photometric = header.text(ds, "PhotometricInterpretation")
    if photometric not in PHOTOMETRIC:
        raise refuse(f"photometric interpretation {photometric or '(none)'} is not supported")
    samples = header.integer(ds, "SamplesPerPixel", 1)
    if samples != (3 if photometric in COLOUR and photometric != "PALETTE COLOR" else 1):
        raise refuse(f"{samples} samples per pixel do not fit photometric interpretation {photometric}")
    if photometric == "PALETTE COLOR" and "RedPaletteColorLookupTableDescriptor" not in ds:
        raise refuse("PALETTE COLOR without its palette colour lookup tables")
    bits_allocated, bits_stored = header.integer(ds, "BitsAllocated", 0), header.integer(ds, "BitsStored", 0)
    if bits_allocated not in (1, 8, 16, 32) or not 0 < bits_stored <= bits_allocated:
        raise refuse(f"BitsAllocated {bits_allocated} / BitsStored {bits_stored} is not a supported bit depth")
    rows, columns = header.integer(ds, "Rows", 0), header.integer(ds, "Columns", 0)
    frames = header.integer(ds, "NumberOfFrames", 1)
    if rows < 1 or columns < 1 or frames < 1:
        raise refuse(f"image of {rows} × {columns} pixels, {frames} frame(s)")
    if rows * columns * frames > limits.max_pixels:
        raise TooLarge(f"{name}: {rows} × {columns} pixels × {frames} frame(s) is over the limit of "
                       f"{limits.max_pixels} pixels per object")
    if not syntax.is_compressed:
        expected, present = _expected_length(ds, rows, columns, frames, bits_allocated), len(header.pixel_data(ds))
        if present < expected:
            raise refuse(f"pixel data is truncated ({present} of {expected} bytes)")


def _expected_length(ds: pydicom.Dataset, rows: int, columns: int, frames: int, bits_allocated: int) -> int:
    """pydicom's get_expected_length (bytes of native pixel data, less an odd length's padding)
    from the header values check_displayable has read; pydicom's own where SamplesPerPixel or
    the geometry is not plainly there (it raises for what it cannot compute)."""
    samples = header.value(ds, "SamplesPerPixel")
    if not isinstance(samples, int) or "Rows" not in ds or "Columns" not in ds or "BitsAllocated" not in ds:
        return get_expected_length(ds)
    length = rows * columns * samples * frames
    length = length // 8 + (length % 8 > 0) if bits_allocated == 1 else length * (bits_allocated // 8)
    if header.text(ds, "PhotometricInterpretation") == "YBR_FULL_422":  # PS3.4 C.7.6.3.1.2
        length = length // 3 * 2
    return length


def _pixel_spacing(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm, or None when absent or malformed (CXR files often lack it;
    grading consensus needs it to average reader points in millimetres)."""
    plain = header.numbers(ds, "PixelSpacing")
    try:
        row, col = (float(v) for v in (plain if plain is not None else ds.get("PixelSpacing") or ()))
    except (TypeError, ValueError):
        return None
    return (row, col) if row > 0 and col > 0 else None


def validate_study(study_id: str, patient_id: str, report: str, files: list[tuple[str, FileSource]],
                   scrub: bool, limits: IngestLimits | None = None,
                   allow_burned_in: bool = False) -> tuple[list[ParsedInstance], list[str]]:
    if not study_id.strip():
        raise IngestError("study_id is empty")
    if not patient_id.strip():
        raise IngestError(f"{study_id}: patient_id is empty")
    if not report.strip():
        raise IngestError(f"{study_id}: the report text is empty")
    if not files:
        raise IngestError(f"{study_id}: no DICOM files")
    limits = limits or IngestLimits()
    parsed, removed = [], []
    for name, data in files:
        inst, rem = parse_instance(name, data, scrub=scrub, limits=limits, patient_id=patient_id,
                                   allow_burned_in=allow_burned_in)
        parsed.append(inst)
        removed += rem
    if len({p.study_instance_uid for p in parsed}) > 1:
        raise IngestError(f"{study_id}: files belong to more than one StudyInstanceUID")
    if len({p.patient_key for p in parsed} - {None}) > 1:
        raise PatientMismatch(f"{study_id}: files carry more than one PatientID (compared ignoring case, blanks and "
                              "the leading zeros of a numeric id)")
    for p in parsed:  # UIDs become object keys and export paths: no separators, no '..'
        bad = [uid for uid in (p.study_instance_uid, p.obj.series_instance_uid, p.obj.sop_instance_uid)
               if not is_dicom_uid(uid)]
        if bad:
            raise IngestError(f"{study_id}: not a valid DICOM UID: {bad[0][:80]!r}")
    return parsed, sorted(set(removed))


async def ingest_study(pool: AsyncConnectionPool, store: ObjectStore, bucket: str, *, study_id: str,
                       patient_id: str, report: str, files: list[tuple[str, FileSource]], scrub: bool = False,
                       protocol: str = DEFAULT_PROTOCOL, limits: IngestLimits | None = None,
                       allow_burned_in: bool = False) -> IngestResult:
    """Validate, store and announce one study. Raises IngestError (nothing stored) on bad input.
    `allow_burned_in` is the curator's override for objects whose BurnedInAnnotation is YES.
    `files` are (name, bytes | path | open binary file); each is read one at a time."""
    if not is_study_id(study_id):
        raise IngestError(f"study_id {study_id[:80]!r} is not allowed: use letters, digits, '.', '_' and '-'"
                          " (starting with a letter or digit, no '..', at most 128 characters)")
    parsed, removed = await asyncio.to_thread(validate_study, study_id, patient_id, report, files, scrub, limits,
                                              allow_burned_in)
    async with pool.connection() as conn:
        if await studies.exists(conn, study_id):
            return IngestResult(study_id, "duplicate")
        await _refuse_shared_images(conn, study_id, parsed)
        await _refuse_second_patient_id(conn, study_id, patient_id, parsed)
    # Objects first, then their manifest if the list is too long to travel in the event (a study
    # of thousands of instances would not fit): a crash after this leaves unreferenced
    # (content-addressed) objects, never a study row or an event pointing at missing bytes.
    objects = [p.obj for p in parsed]
    manifest, manifest_bytes = manifests.plan(study_id, objects)
    await asyncio.to_thread(_store_all, store, bucket, parsed)
    if manifest_bytes is not None:
        async with pool.connection() as conn:  # the collector (manifest_gc) never deletes one being written
            await studies.lock_manifests(conn, study_id)
            try:
                await asyncio.to_thread(manifests.store_planned, store, bucket, manifest, manifest_bytes)
            finally:
                await studies.unlock_manifests(conn, study_id)
    # The study's facts are those of its frontal image (the one a chest reader judges first).
    facts = next((p.facts for p in parsed if p.facts.get("view_position") in ("PA", "AP")), parsed[0].facts)
    event = ReportIngested(study_id=study_id, patient_id=patient_id, protocol=protocol,
                           study_instance_uid=parsed[0].study_instance_uid, report_text=report,
                           objects_manifest=manifest)
    dicom_patient = _dicom_patient_key(parsed)
    async with unit_of_work(pool) as conn:
        if dicom_patient is not None:  # concurrent ingests of one patient check one after the other
            await studies.lock_patient(conn, dicom_patient)
        await studies.lock_images(conn, _image_keys(parsed))  # and so do those that could share an image
        if not await studies.insert(conn, study_id, patient_id, protocol, event.study_instance_uid, report,
                                    event.correlation_id, [facts[k] for k in FACTS], dicom_patient):
            return IngestResult(study_id, "duplicate")
        await _refuse_shared_images(conn, study_id, parsed)  # again, in the transaction: a concurrent twin
        await _refuse_second_patient_id(conn, study_id, patient_id, parsed)
        await studies.insert_objects(conn, study_id, objects)
        await studies.set_manifest(conn, study_id, manifest.key)
        await outbox.record(conn, [event])
    return IngestResult(study_id, "ingested", objects, removed)


def _store_all(store: ObjectStore, bucket: str, parsed: list[ParsedInstance]) -> None:
    """Stream each object to the store (same bytes, same key: writing twice is harmless)."""
    for p in parsed:
        with open_source(p.source) as fp:
            store.put_stream(bucket, p.obj.object_key, fp, p.length, content_type="application/dicom",
                             sha256=p.obj.sha256)


async def _refuse_shared_images(conn: psycopg.AsyncConnection, study_id: str, parsed: list[ParsedInstance]) -> None:
    """SharedImages when another study already has this StudyInstanceUID, one of these SOP
    Instance UIDs, or an image with the same decoded pixels: the same images under two study ids
    could land on both sides of a release's split (holdout contamination). Scrubbing maps UIDs
    consistently, so a scrubbed twin is caught by its UIDs; one re-exported with new UIDs or in
    another transfer syntax, by its pixels."""
    what, row = "StudyInstanceUID", await studies.other_with_study_uid(conn, parsed[0].study_instance_uid, study_id)
    if row is None:
        what, row = "SOPInstanceUID", await studies.other_with_sop_uids(
            conn, [p.obj.sop_instance_uid for p in parsed], study_id)
    if row is not None:
        raise shared_uid(study_id, what, row["shared"], row["other"])
    digests = [p.obj.pixel_sha256 for p in parsed if p.obj.pixel_sha256 is not None]
    row = await studies.other_with_pixel_digests(conn, digests, study_id)
    if row is not None:
        raise shared_pixels(study_id, parsed, row["pixel_sha256"], row["other"], row["shared"])


def shared_uid(study_id: str, what: str, shared: str, other: str) -> SharedImages:
    """The refusal for a StudyInstanceUID or SOPInstanceUID (`what`) already another study's."""
    return SharedImages(f"{study_id}: {what} {shared} is already study {other}'s: the same images"
                        " under two study ids could land on both sides of a release's split")


def shared_pixels(study_id: str, parsed: list[ParsedInstance], pixel_sha256: str, other: str,
                  other_sop: str) -> SharedImages:
    """The refusal for an image whose decoded pixels are already another study's."""
    mine = next(p.obj.sop_instance_uid for p in parsed if p.obj.pixel_sha256 == pixel_sha256)
    return SharedImages(f"{study_id}: the pixels of SOPInstanceUID {mine} are already study {other}'s"
                        f" (its SOPInstanceUID {other_sop}; pixel sha256 {pixel_sha256[:16]}…): the"
                        " same image re-exported under another study id could land on both sides of a release's"
                        " split")


def _image_keys(parsed: list[ParsedInstance]) -> list[str]:
    """What _refuse_shared_images compares: the StudyInstanceUID, SOP Instance UIDs and pixel digests."""
    return [parsed[0].study_instance_uid, *(p.obj.sop_instance_uid for p in parsed),
            *(p.obj.pixel_sha256 for p in parsed if p.obj.pixel_sha256 is not None)]


def _dicom_patient_key(parsed: list[ParsedInstance]) -> str | None:
    return next((p.patient_key for p in parsed if p.patient_key is not None), None)


async def _refuse_second_patient_id(conn: psycopg.AsyncConnection, study_id: str, patient_id: str,
                                    parsed: list[ParsedInstance]) -> None:
    """PatientConflict when the files' patient (their DICOM PatientID, normalised) is already
    another study's under another patient id: the split keeps a patient id's studies on one
    side, so one patient under two ids could be on both (holdout contamination). One patient id
    given to several DICOM patients is let through: that keeps them together (a merged record)."""
    key = _dicom_patient_key(parsed)
    if key is None:
        return
    row = await studies.other_with_dicom_patient(conn, key, patient_id, study_id)
    if row is not None:
        raise patient_conflict(study_id, patient_id, row["patient_id"], row["study_id"])


def patient_conflict(study_id: str, patient_id: str, other_patient_id: str, other: str) -> PatientConflict:
    """The refusal for files whose DICOM patient is another study's under another patient id."""
    return PatientConflict(
        f"{study_id}: the files' patient (their DICOM PatientID) was ingested as patient {other_patient_id!r}"
        f" with study {other}, not {patient_id!r}: one patient under two patient ids could land on "
        f"both sides of a release's split; ingest it as {other_patient_id!r}")
