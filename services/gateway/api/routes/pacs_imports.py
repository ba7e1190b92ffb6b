"""PACS imports: a curator asks the gateway to pull studies from a PACS over DICOMweb (the API twin
of `radcurate ingest --dicomweb`), then follows per study what went in and what was refused."""

from __future__ import annotations

import json
import uuid
from typing import Annotated

from fastapi import APIRouter, status
from pydantic import Field, StringConstraints

from services.common.contracts import ProtocolName
from services.common.db import unit_of_work
from services.common.pacs_import import ImportRequest
from services.common.pacs_pairing import ReportBook, ReportRow, ReportsError
from services.common.protocols import DEFAULT_PROTOCOL
from services.gateway.api.models import RequestBody
from services.gateway.auth import Curator
from services.gateway.deps import Res
from services.gateway.pacs_imports import start_import
from services.gateway.problems import Problem
from services.gateway.repo import pacs_imports

router = APIRouter(prefix="/api/v1/pacs-imports", tags=["curation"])
MAX_REPORTS = 100_000


class ReportIn(RequestBody):
    report: str
    accession_number: str = ""
    study_instance_uid: str = ""
    study_id: str = ""
    patient_id: str = ""


class PacsImportIn(RequestBody):
    dicomweb_url: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] = Field(
        description="The PACS's DICOMweb root; one of the gateway's RADCURATE_GATEWAY_DICOMWEB_URLS.")
    study_uids: list[str] = Field(default_factory=list, description="Only these studies (else the query's).")
    query: dict[str, str] = Field(default_factory=dict, description="QIDO-RS matching keys, e.g. ModalitiesInStudy.")
    reports: list[ReportIn] = Field(min_length=1, max_length=MAX_REPORTS,
                                    description="Reports keyed by accession_number or study_instance_uid.")
    scrub: bool = False
    protocol: ProtocolName = Field(DEFAULT_PROTOCOL, description="A registered protocol's name.")


@router.post("", status_code=status.HTTP_202_ACCEPTED)
async def request_import(body: PacsImportIn, user: Curator, res: Res) -> dict:
    """Start importing a PACS's studies (QIDO-RS search, WADO-RS retrieve) with their reports; each
    study passes the same checks as `POST /api/v1/studies`, and studies already in are skipped."""
    url = body.dicomweb_url.rstrip("/")
    allowed = [u.rstrip("/") for u in res.settings.dicomweb_urls]
    if url not in allowed:
        # The gateway fetches what it is pointed at: only PACSes its operator named are reachable.
        raise Problem(403, f"{url} is not one of this gateway's PACSes (RADCURATE_GATEWAY_DICOMWEB_URLS:"
                           f" {', '.join(allowed) or 'none configured'})")
    try:
        book = ReportBook([ReportRow(**r.model_dump()) for r in body.reports], "reports",
                          row_name=lambda i: f"[{i}]")
    except ReportsError as exc:
        raise Problem(422, str(exc)) from exc
    request = ImportRequest(url, tuple(body.study_uids), body.query, scrub=body.scrub, protocol=body.protocol)
    import_id = str(uuid.uuid4())
    kept = {"study_uids": body.study_uids, "query": body.query, "scrub": body.scrub,
            "protocol": body.protocol, "reports": len(body.reports)}
    async with unit_of_work(res.pool) as conn:
        await pacs_imports.insert(conn, import_id, user.user_id, url, json.dumps(kept))
    start_import(res, import_id, request, book)
    return {"import_id": import_id, "status": "running", "href": f"/api/v1/pacs-imports/{import_id}"}


@router.get("/{import_id}")
async def get_import(import_id: uuid.UUID, _: Curator, res: Res) -> dict:
    """The import's status (running, done, failed, interrupted), counts, and each study's outcome
    with the reason for every refusal."""
    async with res.pool.connection() as conn:
        row = await pacs_imports.get(conn, import_id)
    if row is None:
        raise Problem(404, f"no PACS import {import_id}")
    return {**row, "import_id": str(row["import_id"]), "requested_at": row["requested_at"].isoformat(),
            "completed_at": row["completed_at"] and row["completed_at"].isoformat()}
