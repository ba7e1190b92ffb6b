"""Studies: ingest over HTTP, the study view, the rendered image and the raw DICOM link."""

from __future__ import annotations

import asyncio
import datetime
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile, status
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from services.common.contracts import DicomObject, Finding, ProtocolName, SuggestedLabel
from services.common.protocols import DEFAULT_PROTOCOL
from services.gateway.access import own_read
from services.gateway.auth import Curator, CurrentUser
from services.gateway.deps import Res
from services.gateway.derivatives import derivatives_for
from services.gateway.hanging import HungView, hang
from services.gateway.ingest import IngestConflict, IngestError, TooLarge, ingest_study
from services.gateway.ingest_batch import BatchStudy, ingest_batch
from services.gateway.problems import Problem
from services.gateway.render import RenderError
from services.gateway.repo import studies

# Re-exported for the review routes, which select the same columns (the SQL lives in the repo).
from services.gateway.repo.studies import FACT_COLUMNS as FACT_COLUMNS
from services.gateway.repo.studies import OBJECT_VIEWS as OBJECT_VIEWS

log = logging.getLogger(__name__)
MAX_UPLOAD_BYTES = 512 * 1024 * 1024
# Files in one study's upload. Starlette's multipart parser stops at 1,000 by default, and a lumbar
# MRI or a CT runs to thousands of instances; the bytes stay bounded by MAX_UPLOAD_BYTES and the
# route's body limit, and each file is spooled to disk, not held in memory.
MAX_FILES_PER_STUDY = 20_000
# Studies in one `POST /api/v1/studies/batch` (the bytes are bounded like one study's upload).
MAX_STUDIES_PER_BATCH = 1000


class ManyFilesRoute(APIRoute):
    """A route whose multipart form may hold a whole study's files: the form is parsed with this
    router's bound before FastAPI reads it (Request caches the parsed form). The token has been
    checked by then (AuthenticateFirst, outermost), so no unauthenticated body is parsed."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def parse_then_handle(request: Request) -> Response:
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                await request.form(max_files=MAX_FILES_PER_STUDY, max_fields=1000)
            return await handler(request)

        return parse_then_handle


router = APIRouter(prefix="/api/v1/studies", tags=["studies"], route_class=ManyFilesRoute)


class IngestResponse(BaseModel):
    study_id: str
    status: str
    objects: list[DicomObject]
    scrubbed: list[str]


@router.post("", status_code=status.HTTP_201_CREATED)
async def ingest(res: Res, _: Curator, response: Response, study_id: Annotated[str, Form()],
                 patient_id: Annotated[str, Form()], report: Annotated[str, Form()],
                 files: Annotated[list[UploadFile], File()], scrub: Annotated[bool, Form()] = False,
                 protocol: Annotated[ProtocolName, Form()] = DEFAULT_PROTOCOL,
                 allow_burned_in_annotation: Annotated[bool, Form()] = False) -> IngestResponse:
    """Ingest one study: its DICOM instances and its report. Re-ingesting is a no-op (200).
    `scrub` applies the PS3.15 Basic Profile; `allow_burned_in_annotation` is the curator's
    override for objects marked BurnedInAnnotation YES (refused otherwise).
    Uploaded files are read one at a time from their spooled temporary files, never all at once."""
    limit = res.settings.max_object_bytes
    for f in files:  # before anything is read: a size over the bound is refused outright
        if f.size is not None and f.size > limit:
            raise Problem(413, f"{f.filename}: {f.size} bytes is over the limit of {limit} bytes per object")
    if sum(f.size or 0 for f in files) > MAX_UPLOAD_BYTES:
        raise Problem(413, "upload larger than 512 MiB")
    payload = [(f.filename or "upload", f.file) for f in files]
    try:
        result = await ingest_study(res.pool, res.store, res.settings.objects_bucket, study_id=study_id,
                                    patient_id=patient_id, report=report, files=payload, scrub=scrub,
                                    protocol=protocol, limits=res.settings,
                                    allow_burned_in=allow_burned_in_annotation)
    except TooLarge as exc:
        raise Problem(413, str(exc)) from exc
    except IngestConflict as exc:  # the request is sound alone; it conflicts with a stored study
        raise Problem(409, str(exc)) from exc
    except IngestError as exc:
        raise Problem(422, str(exc)) from exc
    if result.status == "duplicate":
        response.status_code = status.HTTP_200_OK
    return IngestResponse(study_id=result.study_id, status=result.status, objects=result.objects,
                          scrubbed=result.scrubbed)


class BatchStudyForm(BaseModel):
    """One study of a batch: its form fields, and how many of the request's `files` parts (in order) are its files."""

    study_id: str
    patient_id: str
    report: str
    files: int = Field(ge=1, le=MAX_FILES_PER_STUDY)


_BATCH_FORMS = TypeAdapter(list[BatchStudyForm])


class BatchStudyOutcome(BaseModel):
    study_id: str
    status: Literal["ingested", "duplicate", "refused"]
    http_status: int = Field(description="What `POST /api/v1/studies` answers for this study alone.")
    detail: str | None = Field(None, description="Why the study was refused (the single endpoint's problem detail).")
    objects: int = 0
    scrubbed: list[str] = Field(default_factory=list)


class BatchResponse(BaseModel):
    studies: list[BatchStudyOutcome]


@router.post("/batch")
async def ingest_many(res: Res, _: Curator, studies: Annotated[str, Form(description=(
                          "JSON list of {study_id, patient_id, report, files}: `files` is how many of the"
                          " request's `files` parts, in order, are the study's."))],
                      files: Annotated[list[UploadFile], File()], scrub: Annotated[bool, Form()] = False,
                      protocol: Annotated[ProtocolName, Form()] = DEFAULT_PROTOCOL,
                      allow_burned_in_annotation: Annotated[bool, Form()] = False) -> BatchResponse:
    """Ingest several studies in one request, each exactly as `POST /api/v1/studies` would (same
    checks, same storage, one transaction per study): a study refused is listed with the status and
    reason its own request would have had, and the others go in. Re-ingesting is a no-op per study."""
    try:
        forms = _BATCH_FORMS.validate_json(studies)
    except ValidationError as exc:
        raise Problem(422, f"studies: not a list of {{study_id, patient_id, report, files}} ({exc.errors()[0]['msg']})"
                      ) from exc
    if not forms or len(forms) > MAX_STUDIES_PER_BATCH:
        raise Problem(422, f"a batch holds 1 to {MAX_STUDIES_PER_BATCH} studies, not {len(forms)}")
    if sum(f.files for f in forms) != len(files):
        raise Problem(422, f"the studies name {sum(f.files for f in forms)} files; the request carries {len(files)}")
    if sum(f.size or 0 for f in files) > MAX_UPLOAD_BYTES:
        raise Problem(413, "upload larger than 512 MiB")
    limit, batch, start = res.settings.max_object_bytes, [], 0
    for form in forms:
        own, start = files[start:start + form.files], start + form.files
        too_large = next((f for f in own if f.size is not None and f.size > limit), None)
        batch.append(BatchStudy(form.study_id, form.patient_id, form.report,
                                [(f.filename or "upload", f.file) for f in own],
                                refused=None if too_large is None else (
                                    413, f"{too_large.filename}: {too_large.size} bytes is over the limit of {limit}"
                                    " bytes per object")))
    outcomes = await ingest_batch(res.pool, res.store, res.settings.objects_bucket, batch, scrub=scrub,
                                  protocol=protocol, limits=res.settings, allow_burned_in=allow_burned_in_annotation)
    return BatchResponse(studies=[BatchStudyOutcome(study_id=o.study_id, status=o.status,  # type: ignore[arg-type]
                                                    http_status=o.http_status, detail=o.detail, objects=o.objects,
                                                    scrubbed=o.scrubbed) for o in outcomes])


async def _objects_for(res, user, study_id: str) -> list[dict]:
    """The study's objects, if this user may see the study (curators, or its live readers)."""
    async with res.pool.connection() as conn:
        await own_read(conn, user, study_id)
        rows = await studies.objects(conn, study_id)
    if not rows:
        raise Problem(404, f"no study {study_id!r}")
    return rows


class StudyFacts(BaseModel):
    """What a reader sees beside the image: the view (PA and AP change how cardiomegaly is
    judged), sex, an age band, the study date (from the de-identified DICOM), the indication (from
    the report), and the file's own window (the page's presets are placed relative to it). None:
    not known."""

    view_position: str | None = None
    patient_sex: str | None = None
    age_band: str | None = None
    study_date: datetime.date | None = None
    indication: str | None = None
    window_center: float | None = None
    window_width: float | None = None
    photometric_interpretation: str | None = Field(None, description="MONOCHROME1: the lowest value is white"
                                                   " (the presets mirror); MONOCHROME2; or a colour model.")


# "INDICATION: ...", "CLINICAL HISTORY: ...", "REASON FOR EXAM: ..." up to the line's end or the next
# upper-case section heading.
_INDICATION = re.compile(r"(?:INDICATION|CLINICAL HISTORY|HISTORY|REASON FOR (?:EXAM(?:INATION)?|STUDY))\s*:\s*"
                         r"(.+?)\s*(?=\n|\b[A-Z][A-Z /]{3,}:|$)")


def indication_of(report: str) -> str | None:
    """The report's indication section, if it has one (at most 300 characters)."""
    m = _INDICATION.search(report or "")
    return m[1].strip()[:300] or None if m else None


def facts_of(row: dict) -> StudyFacts:
    """The study's facts from a row holding FACT_COLUMNS and report_text."""
    return StudyFacts(indication=indication_of(row.get("report_text") or ""),
                      **{k: row.get(k) for k in ("view_position", "patient_sex", "age_band", "study_date",
                                                 "window_center", "window_width", "photometric_interpretation")})


def views_of(row: dict, image_url: str) -> list[HungView]:
    """The study's frontal and lateral images as hung, from a row holding OBJECT_VIEWS."""
    return hang(row.get("object_views") or [], image_url)


class StudyView(BaseModel):
    """What a reader needs to judge the suggestion: the report, each suggested label with the
    sentences that support it, the findings the mapper could not place, and the images. Never
    another reader's vote: those are in the discussion, after one's own vote."""

    study_id: str
    report_text: str
    facts: StudyFacts
    taxonomy_version: str | None
    suggested: list[SuggestedLabel]
    unmapped_findings: list[Finding]
    evidence_sentences: list[str]
    instances: int
    image_url: str
    views: list[HungView] = Field(default_factory=list, description="A frontal and a lateral image, hung left"
                                  " to right (empty unless the study has both): each with its `instance` index.")
    dicom_url: str
    discussion_url: str
    assignment_id: str | None = None
    status: str | None = None


@router.get("/{study_id}")
async def study_view(study_id: str, user: CurrentUser, res: Res) -> StudyView:
    """The study as a reader sees it (readers of the study and curators)."""
    async with res.pool.connection() as conn:
        read = await own_read(conn, user, study_id)
        row = await studies.view(conn, study_id)
    if row is None:
        raise Problem(404, f"no study {study_id!r}")
    suggested = (read or {}).get("suggested") or row["labels"] or []
    unmapped = (read or {}).get("unmapped") or row["unmapped"] or []
    sentences = [e for s in suggested for e in s.get("evidence", [])] + [f["evidence"] for f in unmapped]
    base = f"/api/v1/studies/{study_id}"
    return StudyView(
        study_id=study_id, report_text=row["report_text"], facts=facts_of(row),
        taxonomy_version=row["taxonomy_version"],
        suggested=suggested, unmapped_findings=unmapped, evidence_sentences=list(dict.fromkeys(sentences)),
        instances=row["instances"], image_url=f"{base}/image", views=views_of(row, f"{base}/image"),
        dicom_url=f"{base}/dicom",
        discussion_url=f"{base}/discussion", assignment_id=read and read["assignment_id"],
        status=read and read["status"])


@router.get("/{study_id}/image")
async def image(study_id: str, user: CurrentUser, res: Res,
                window_center: float | None = None, window_width: Annotated[float | None, Query(gt=0)] = None,
                size: Annotated[int, Query(ge=64, le=4096)] = 1024, instance: Annotated[int, Query(ge=0)] = 0,
                format: Literal["png", "jpeg"] = "png") -> Response:
    """The image with window/level (the file's own VOI unless given), from the derivatives made
    when the study was assigned (made now, and kept, if missing). An object that cannot be shown
    answers problem+json."""
    rows = await _objects_for(res, user, study_id)
    if instance >= len(rows):
        raise Problem(404, f"study {study_id!r} has {len(rows)} instance(s); no index {instance}")
    body = await shown_image(res, rows[instance]["sha256"], rows[instance]["object_key"],
                             center=window_center, width=window_width, size=size, fmt=format)
    return Response(body, media_type=f"image/{format}", headers={"Cache-Control": "private, max-age=3600"})


async def shown_image(res, sha256: str, object_key: str, *, center: float | None, width: float | None,
                      size: int, fmt: str) -> bytes:
    """The rendered image, or a problem+json (422 when the object cannot be shown, 500 otherwise)."""
    try:
        return await derivatives_for(res).image(sha256, object_key, center=center, width=width, size=size, fmt=fmt)
    except RenderError as exc:
        raise Problem(422, f"object {object_key} cannot be shown: {exc}") from exc
    except Exception as exc:  # never a bare 500 and a dropped connection
        log.exception("rendering %s failed", object_key)
        raise Problem(500, f"rendering object {object_key} failed ({exc.__class__.__name__})") from exc


@router.get("/{study_id}/dicom")
async def dicom_links(study_id: str, user: CurrentUser, res: Res) -> list[dict]:
    """Short-lived presigned URLs for the raw DICOM instances."""
    rows = await _objects_for(res, user, study_id)
    seconds = res.settings.presigned_url_seconds
    urls = await asyncio.to_thread(
        lambda: [res.store.presigned_get(res.settings.objects_bucket, r["object_key"], seconds) for r in rows])
    return [{"sop_instance_uid": r["sop_instance_uid"], "instance_number": r["instance_number"],
             "series_instance_uid": r["series_instance_uid"], "url": url, "expires_in_seconds": seconds}
            for r, url in zip(rows, urls, strict=True)]
