"""`radcurate ingest --dicomweb URL`: studies from a PACS into RadCurate, through the gateway API.

Search the PACS with QIDO-RS, pair each study with its report, skip the studies the gateway
already has (so a second run fetches and sends only what is missing), retrieve the rest instance
by instance with WADO-RS and hand each study to the gateway's own ingest endpoint — the same
validation, de-identification check and storage as every other ingest; this module never writes
the gateway's tables. Each study ends with one outcome: ingested, present, refused (RadCurate or
the pairing said no, with the reason) or failed (the PACS or the gateway could not be reached;
running again retries it).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote

from radcurate.client import Gateway, GatewayError
from radcurate.pacs_reports import PairedStudy, ReportBook, ReportsError
from services.common.contracts import Protocol
from services.common.dicomweb import DicomWebClient, DicomWebError, StudyMatch


class Outcome(StrEnum):
    INGESTED = "ingested"
    PRESENT = "present"  # already in RadCurate: nothing fetched, nothing sent
    REFUSED = "refused"
    FAILED = "failed"


@dataclass(frozen=True)
class StudyResult:
    study_instance_uid: str
    study_id: str
    outcome: Outcome
    detail: str = ""
    instances: int = 0


@dataclass
class PacsIngestSummary:
    found: int = 0
    results: list[StudyResult] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(r.outcome is outcome for r in self.results)

    @property
    def complete(self) -> bool:
        """Every study found is in RadCurate now."""
        return all(r.outcome in (Outcome.INGESTED, Outcome.PRESENT) for r in self.results)


@dataclass(frozen=True)
class PacsIngestRequest:
    dicomweb_url: str
    study_uids: Sequence[str] = ()
    query: Mapping[str, str] = field(default_factory=dict)
    scrub: bool = False
    protocol: Protocol = Protocol.CXR
    concurrency: int = 4


def parse_query(pairs: Sequence[str]) -> dict[str, str]:
    """KEY=VALUE pairs (QIDO-RS matching keys such as ModalitiesInStudy=CR) as a dict."""
    query = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--query {pair!r}: expected KEY=VALUE, e.g. ModalitiesInStudy=CR")
        query[key.strip()] = value.strip()
    return query


async def find_studies(pacs: DicomWebClient, request: PacsIngestRequest) -> tuple[list[StudyMatch], list[str]]:
    """The studies to consider — the named ones, else what the query matches — and the named
    StudyInstanceUIDs the PACS does not have (reported as failed, not silently dropped)."""
    if not request.study_uids:
        return await pacs.search_studies(request.query), []
    found, missing = [], []
    for uid in dict.fromkeys(request.study_uids):
        matches = await pacs.search_studies({**request.query, "StudyInstanceUID": uid})
        found += matches
        missing += [] if matches else [uid]
    return found, missing


async def ingest_from_pacs(request: PacsIngestRequest, book: ReportBook, gateway: Gateway, *,
                           pacs: DicomWebClient | None = None, on_found: Callable[[int], None] | None = None,
                           on_result: Callable[[StudyResult], None] | None = None) -> PacsIngestSummary:
    """Ingest every study the request names; raises DicomWebError only if the search itself fails."""
    own_client = pacs is None
    pacs = pacs or DicomWebClient(request.dicomweb_url)
    try:
        studies, missing = await find_studies(pacs, request)
        summary = PacsIngestSummary(found=len(studies))
        summary.results += [StudyResult(uid, "", Outcome.FAILED, "not found in the PACS") for uid in missing]
        if on_found:
            on_found(len(studies))
        gate = asyncio.Semaphore(max(1, request.concurrency))

        async def one(match: StudyMatch) -> None:
            async with gate:
                result = await ingest_one(pacs, gateway, book, match, request)
            summary.results.append(result)
            if on_result:
                on_result(result)

        await asyncio.gather(*(one(m) for m in studies))
    finally:
        if own_client:
            await pacs.aclose()
    summary.results.sort(key=lambda r: (r.study_id, r.study_instance_uid))
    return summary


async def ingest_one(pacs: DicomWebClient, gateway: Gateway, book: ReportBook, match: StudyMatch,
                     request: PacsIngestRequest) -> StudyResult:
    """One study's whole way: pair, skip if present, retrieve, hand to the gateway."""
    try:
        paired = book.pair(match)
    except ReportsError as exc:
        return StudyResult(match.study_instance_uid, "", Outcome.REFUSED, str(exc))
    result, refs = _result_for(paired), []
    try:
        if await _present(gateway, paired.study_id):
            return result(Outcome.PRESENT)
        refs = await pacs.search_instances(match.study_instance_uid)
        if not refs:
            return result(Outcome.FAILED, "the PACS lists no instances for this study")
        with tempfile.TemporaryDirectory(prefix="radcurate-pacs-") as spool:
            paths = await _retrieve_to(pacs, match.study_instance_uid, refs, Path(spool))
            answer = await _send(gateway, paired, paths, request)
    except DicomWebError as exc:
        return result(Outcome.FAILED, f"PACS: {exc}")
    except GatewayError as exc:
        if exc.status in (413, 422):
            return result(Outcome.REFUSED, str(exc.problem.get("detail", exc)), len(refs))
        return result(Outcome.FAILED, f"gateway: {exc}")
    if answer["status"] == "duplicate":  # another run got there between our check and our send
        return result(Outcome.PRESENT)
    scrubbed = f"; scrubbed {', '.join(answer['scrubbed'])}" if answer.get("scrubbed") else ""
    return result(Outcome.INGESTED, f"{len(answer['objects'])} instance(s){scrubbed}", len(answer["objects"]))


def _result_for(paired: PairedStudy) -> Callable[..., StudyResult]:
    def make(outcome: Outcome, detail: str = "", instances: int = 0) -> StudyResult:
        return StudyResult(paired.match.study_instance_uid, paired.study_id, outcome, detail, instances)

    return make


async def _present(gateway: Gateway, study_id: str) -> bool:
    try:
        await gateway.request("GET", f"/api/v1/studies/{quote(study_id, safe='')}")
    except GatewayError as exc:
        if exc.status == 404:
            return False
        raise
    return True


async def _retrieve_to(pacs: DicomWebClient, study_instance_uid: str, refs, spool: Path) -> list[Path]:
    """Each instance to its own file: only one instance is in this process's memory at a time."""
    paths = []
    for n, ref in enumerate(refs):
        data = await pacs.retrieve_instance(study_instance_uid, ref)
        path = spool / f"{n:05d}_{ref.sop_instance_uid}.dcm"
        await asyncio.to_thread(path.write_bytes, data)
        paths.append(path)
    return paths


async def _send(gateway: Gateway, paired: PairedStudy, paths: list[Path], request: PacsIngestRequest) -> dict:
    form = {"study_id": paired.study_id, "patient_id": paired.patient_id, "report": paired.report,
            "scrub": str(request.scrub).lower(), "protocol": request.protocol.value}
    with ExitStack() as files:
        upload = [("files", (p.name, files.enter_context(open(p, "rb")), "application/dicom")) for p in paths]
        resp = await gateway.request("POST", "/api/v1/studies", data=form, files=upload)
    return resp.json()
