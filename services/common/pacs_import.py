"""Importing a PACS's studies: search, pair with reports, skip what is there, retrieve, hand over.

One loop for both ways in: `radcurate ingest --dicomweb` hands each study to the gateway over
HTTP, the gateway's PACS import API hands it to its own ingest code in-process. Each is a
`StudySink`; the loop never writes anything itself. Each study ends with one outcome: ingested,
present (already in RadCurate: nothing fetched, nothing sent), refused (the pairing or the ingest
checks said no, with the reason) or failed (the PACS or the sink could not do it; running again
retries it).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol as Interface

from services.common.dicomweb import DicomWebClient, DicomWebError, InstanceRef, StudyMatch
from services.common.pacs_pairing import PairedStudy, ReportBook, ReportsError
from services.common.protocols import DEFAULT_PROTOCOL


class Outcome(StrEnum):
    INGESTED = "ingested"
    PRESENT = "present"
    REFUSED = "refused"
    FAILED = "failed"


class Refused(Exception):
    """The sink's ingest checks refused the study; the message says why."""


@dataclass(frozen=True)
class StudyResult:
    study_instance_uid: str
    study_id: str
    outcome: Outcome
    detail: str = ""
    instances: int = 0


@dataclass
class ImportSummary:
    found: int = 0
    results: list[StudyResult] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(r.outcome is outcome for r in self.results)

    def counts(self) -> dict[str, int]:
        return {o.value: self.count(o) for o in Outcome}

    @property
    def complete(self) -> bool:
        """Every study found is in RadCurate now."""
        return all(r.outcome in (Outcome.INGESTED, Outcome.PRESENT) for r in self.results)


@dataclass(frozen=True)
class ImportRequest:
    dicomweb_url: str
    study_uids: Sequence[str] = ()
    query: Mapping[str, str] = field(default_factory=dict)
    scrub: bool = False
    protocol: str = DEFAULT_PROTOCOL  # a registered protocol's name
    concurrency: int = 4


@dataclass(frozen=True)
class Ingested:
    """What the sink stored: the instance count, the identifying attributes it scrubbed, and
    whether the study was there already (another import got to it first)."""

    instances: int
    scrubbed: tuple[str, ...] = ()
    duplicate: bool = False


class StudySink(Interface):
    async def present(self, study_id: str) -> bool:
        """Whether RadCurate has the study already."""

    async def ingest(self, paired: PairedStudy, files: list[Path], request: ImportRequest) -> Ingested:
        """Ingest one study from its files; raises Refused when the ingest checks say no."""


async def find_studies(pacs: DicomWebClient, request: ImportRequest) -> tuple[list[StudyMatch], list[str]]:
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


async def import_studies(request: ImportRequest, book: ReportBook, sink: StudySink, *,
                         pacs: DicomWebClient | None = None, on_found: Callable[[int], object] | None = None,
                         on_result: Callable[[StudyResult], object] | None = None) -> ImportSummary:
    """Import every study the request names; raises DicomWebError only if the search itself fails.
    `on_found` (the number of studies) and `on_result` may be coroutine functions: they are awaited."""
    own_client = pacs is None
    pacs = pacs or DicomWebClient(request.dicomweb_url)
    try:
        studies, missing = await find_studies(pacs, request)
        summary = ImportSummary(found=len(studies))
        summary.results += [StudyResult(uid, "", Outcome.FAILED, "not found in the PACS") for uid in missing]
        if on_found and asyncio.iscoroutine(told := on_found(len(studies))):
            await told
        gate = asyncio.Semaphore(max(1, request.concurrency))

        async def one(match: StudyMatch) -> None:
            async with gate:
                result = await import_one(pacs, sink, book, match, request)
            summary.results.append(result)
            if on_result and asyncio.iscoroutine(done := on_result(result)):
                await done

        await asyncio.gather(*(one(m) for m in studies))
    finally:
        if own_client:
            await pacs.aclose()
    summary.results.sort(key=lambda r: (r.study_id, r.study_instance_uid))
    return summary


async def import_one(pacs: DicomWebClient, sink: StudySink, book: ReportBook, match: StudyMatch,
                     request: ImportRequest) -> StudyResult:
    """One study's whole way: pair, skip if present, retrieve, hand to the sink."""
    try:
        paired = book.pair(match)
    except ReportsError as exc:
        return StudyResult(match.study_instance_uid, "", Outcome.REFUSED, str(exc))

    def result(outcome: Outcome, detail: str = "", instances: int = 0) -> StudyResult:
        return StudyResult(match.study_instance_uid, paired.study_id, outcome, detail, instances)

    try:
        if await sink.present(paired.study_id):
            return result(Outcome.PRESENT)
        refs = await pacs.search_instances(match.study_instance_uid)
        if not refs:
            return result(Outcome.FAILED, "the PACS lists no instances for this study")
        with tempfile.TemporaryDirectory(prefix="radcurate-pacs-") as spool:
            files = await retrieve_to(pacs, match.study_instance_uid, refs, Path(spool))
            done = await sink.ingest(paired, files, request)
    except Refused as exc:
        return result(Outcome.REFUSED, str(exc))
    except DicomWebError as exc:
        return result(Outcome.FAILED, f"PACS: {exc}")
    except Exception as exc:  # noqa: BLE001 - the sink's transport failed; one study's failure, retried next run
        return result(Outcome.FAILED, f"{exc.__class__.__name__}: {exc}")
    if done.duplicate:
        return result(Outcome.PRESENT)
    scrubbed = f"; scrubbed {', '.join(done.scrubbed)}" if done.scrubbed else ""
    return result(Outcome.INGESTED, f"{done.instances} instance(s){scrubbed}", done.instances)


async def retrieve_to(pacs: DicomWebClient, study_instance_uid: str, refs: list[InstanceRef],
                      spool: Path) -> list[Path]:
    """Each instance to its own file: only one instance at a time is held in memory here."""
    paths = []
    for n, ref in enumerate(refs):
        data = await pacs.retrieve_instance(study_instance_uid, ref)
        path = spool / f"{n:05d}_{ref.sop_instance_uid}.dcm"  # named in refusals
        await asyncio.to_thread(path.write_bytes, data)
        paths.append(path)
    return paths
