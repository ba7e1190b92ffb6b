"""Bulk ingest: many studies in one request, each ingested by the same `ingest_study`.

One HTTP request per study made the gateway's request machinery, the client's request building
and one round trip per study the cost of a folder ingest (issue 15 §2). A batch carries several
studies' forms and files; each study still goes through `ingest_study` on its own — the same
validation, de-identification, contamination checks, storage and transaction — so a study's
outcome is what its single request would have answered: ingested, duplicate, or refused with the
status and reason. One refused study never refuses the others.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from psycopg_pool import AsyncConnectionPool

from services.common.objectstore import ObjectStore
from services.gateway.ingest import FileSource, IngestError, IngestLimits, PatientConflict, TooLarge, ingest_study

# Studies of one batch ingested at once: their parsing, PUTs and transactions overlap (the
# round trips to Postgres and the S3 server are most of a small study's time).
BATCH_CONCURRENCY = 8


@dataclass
class BatchStudy:
    study_id: str
    patient_id: str
    report: str
    files: list[tuple[str, FileSource]]
    refused: tuple[int, str] | None = None  # refused before ingest (a bound of the request): status, reason


@dataclass
class StudyOutcome:
    study_id: str
    status: str  # "ingested" | "duplicate" | "refused"
    http_status: int  # what the single-study endpoint answers: 201, 200, 409, 413, 422
    detail: str | None = None
    objects: int = 0
    scrubbed: list[str] = field(default_factory=list)


def status_of(exc: IngestError) -> int:
    """The single-study endpoint's status for a refusal."""
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, PatientConflict):  # sound alone; conflicts with a stored study
        return 409
    return 422


async def ingest_batch(pool: AsyncConnectionPool, store: ObjectStore, bucket: str, studies: list[BatchStudy], *,
                       scrub: bool, protocol: str, limits: IngestLimits | None = None,
                       allow_burned_in: bool = False, concurrency: int = BATCH_CONCURRENCY) -> list[StudyOutcome]:
    """Ingest each study (in the batch's order of outcomes); a refusal is that study's outcome."""
    gate = asyncio.Semaphore(concurrency)

    async def one(s: BatchStudy) -> StudyOutcome:
        if s.refused is not None:
            return StudyOutcome(s.study_id, "refused", s.refused[0], s.refused[1])
        async with gate:
            try:
                result = await ingest_study(pool, store, bucket, study_id=s.study_id, patient_id=s.patient_id,
                                            report=s.report, files=s.files, scrub=scrub, protocol=protocol,
                                            limits=limits, allow_burned_in=allow_burned_in)
            except IngestError as exc:
                return StudyOutcome(s.study_id, "refused", status_of(exc), str(exc))
        return StudyOutcome(s.study_id, result.status, 201 if result.status == "ingested" else 200,
                            objects=len(result.objects), scrubbed=result.scrubbed)

    return list(await asyncio.gather(*(one(s) for s in studies)))
