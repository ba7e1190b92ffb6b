"""PACS imports for curators: the shared import loop (services/common/pacs_import.py) run inside the
gateway, handing each study to the gateway's own `ingest_study` — the very code behind
`POST /api/v1/studies` — and keeping each study's outcome in `pacs_imports` as it goes.

An import runs as a task of the gateway process. If the process stops mid-import the row says
`interrupted`; asking again resumes it, since studies already in are skipped.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from services.common.db import unit_of_work
from services.common.dicomweb import DicomWebError
from services.common.pacs_import import ImportRequest, Ingested, Refused, StudyResult, import_studies
from services.common.pacs_pairing import PairedStudy, ReportBook
from services.common.runtime import Resources
from services.gateway.ingest import IngestError, ingest_study
from services.gateway.repo import pacs_imports, studies
from services.gateway.repo.conn import Conn

log = logging.getLogger(__name__)


class IngestSink:
    """Studies go straight to the gateway's ingest code (no HTTP round trip to itself)."""

    def __init__(self, res: Resources) -> None:
        self.res = res

    async def present(self, study_id: str) -> bool:
        async with self.res.pool.connection() as conn:
            return await studies.exists(conn, study_id)

    async def ingest(self, paired: PairedStudy, files: list[Path], request: ImportRequest) -> Ingested:
        try:  # the instances are read from their temporary files one at a time, under the same bounds
            result = await ingest_study(self.res.pool, self.res.store, self.res.settings.objects_bucket,
                                        study_id=paired.study_id, patient_id=paired.patient_id, report=paired.report,
                                        files=[(p.name, p) for p in files], scrub=request.scrub,
                                        protocol=request.protocol, limits=self.res.settings)
        except IngestError as exc:
            raise Refused(str(exc)) from exc
        return Ingested(len(result.objects), tuple(result.scrubbed), result.status == "duplicate")


def result_json(result: StudyResult) -> dict:
    return dataclasses.asdict(result) | {"outcome": result.outcome.value}


async def _update(res: Resources, write: Callable[[Conn], Awaitable[None]]) -> None:
    """One write to the import's row, committed at once (the curator follows it as it goes)."""
    async with unit_of_work(res.pool) as conn:
        await write(conn)


async def run_import(res: Resources, import_id: str, request: ImportRequest, book: ReportBook) -> None:
    """Run one import to its end, recording each study's outcome as soon as it is known."""
    counts: dict[str, int] = {}

    async def found(n: int) -> None:
        await _update(res, lambda conn: pacs_imports.set_found(conn, import_id, n))

    async def recorded(result: StudyResult) -> None:
        counts[result.outcome.value] = counts.get(result.outcome.value, 0) + 1
        await _update(res, lambda conn: pacs_imports.add_result(conn, import_id, json.dumps([result_json(result)]),
                                                                json.dumps(counts)))

    try:
        summary = await import_studies(request, book, IngestSink(res), on_found=found, on_result=recorded)
    except DicomWebError as exc:
        error = str(exc)
        await _update(res, lambda conn: pacs_imports.fail(conn, import_id, error))
        return
    except asyncio.CancelledError:
        await _update(res, lambda conn: pacs_imports.interrupt(conn, import_id))
        raise
    except Exception as exc:  # noqa: BLE001 - kept on the row for the curator, and logged
        log.exception("PACS import %s failed", import_id)
        error = f"{exc.__class__.__name__}: {exc}"
        await _update(res, lambda conn: pacs_imports.fail(conn, import_id, error))
        return
    await _update(res, lambda conn: pacs_imports.finish(conn, import_id, summary.found, json.dumps(summary.counts()),
                                                        json.dumps([result_json(r) for r in summary.results])))


def start_import(res: Resources, import_id: str, request: ImportRequest, book: ReportBook) -> None:
    """Run the import in the background; the process's shutdown cancels it (→ interrupted)."""
    task = asyncio.create_task(run_import(res, import_id, request, book), name=f"pacs-import-{import_id}")
    res.tasks.append(task)
    task.add_done_callback(lambda t: t in res.tasks and res.tasks.remove(t))
