"""`radcurate ingest --dicomweb URL`: a PACS's studies into RadCurate through the gateway's HTTP API.

The import loop (search, pair, skip what is there, retrieve) is services/common/pacs_import.py;
here each study goes to the gateway's own ingest endpoint, `POST /api/v1/studies` — the same
validation, de-identification check and storage as every other ingest. This side never writes the
gateway's tables; it asks the gateway (`GET /api/v1/studies/{id}`) what it has already.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import quote

from radcurate.client import Gateway, GatewayError
from services.common.pacs_import import ImportRequest, ImportSummary, Ingested, Refused, StudyResult, import_studies
from services.common.pacs_pairing import PairedStudy, ReportBook


def parse_query(pairs: Sequence[str]) -> dict[str, str]:
    """KEY=VALUE pairs (QIDO-RS matching keys such as ModalitiesInStudy=CR) as a dict."""
    query = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--query {pair!r}: expected KEY=VALUE, e.g. ModalitiesInStudy=CR")
        query[key.strip()] = value.strip()
    return query


class GatewayApiSink:
    """Studies go to the gateway's ingest endpoint as a curator would send them."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def present(self, study_id: str) -> bool:
        try:
            await self.gateway.request("GET", f"/api/v1/studies/{quote(study_id, safe='')}")
        except GatewayError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def ingest(self, paired: PairedStudy, files: list[Path], request: ImportRequest) -> Ingested:
        form = {"study_id": paired.study_id, "patient_id": paired.patient_id, "report": paired.report,
                "scrub": str(request.scrub).lower(), "protocol": request.protocol}
        with ExitStack() as opened:  # streamed from the spool files, not read into memory first
            upload = [("files", (p.name, opened.enter_context(open(p, "rb")), "application/dicom")) for p in files]
            try:
                resp = await self.gateway.request("POST", "/api/v1/studies", data=form, files=upload)
            except GatewayError as exc:
                if exc.status in (413, 422):
                    raise Refused(str(exc.problem.get("detail", exc))) from exc
                raise
        answer = resp.json()
        return Ingested(len(answer["objects"]), tuple(answer.get("scrubbed") or ()), answer["status"] == "duplicate")


async def ingest_from_pacs(request: ImportRequest, book: ReportBook, gateway: Gateway, *,
                           on_found: Callable[[int], None] | None = None,
                           on_result: Callable[[StudyResult], None] | None = None) -> ImportSummary:
    """Import the request's studies into the gateway; raises DicomWebError if the search fails."""
    return await import_studies(request, book, GatewayApiSink(gateway), on_found=on_found, on_result=on_result)
