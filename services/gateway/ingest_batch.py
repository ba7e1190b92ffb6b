"""Bulk ingest: many studies in one request and one transaction, each held to `ingest_study`'s checks.

One HTTP request and one transaction per study made the gateway's request machinery, the
client's request building and a dozen round trips to Postgres per study the cost of a folder
ingest (issue 15 §2). A batch runs `ingest_study`'s steps once for all its studies — the same
functions, in the same order:

1. validate and de-identify each study's files (`validate_study`);
2. refuse what is already in or would contaminate a split, on one connection (`present`, then
   `_refuse_shared_images` / `_refuse_second_patient_id` per study), before anything is stored;
3. store every object and instance manifest, several at a time;
4. one transaction: lock the batch's DICOM patients (sorted), then per study the contamination
   checks again (they see the batch's earlier studies), its row and objects; the outbox rows of
   all of them last, in one statement.

A study's outcome is what its own `POST /api/v1/studies` would answer: ingested, duplicate, or
refused with the status and reason; one refused study never refuses the others. A study the
batch path does not take (an id `ingest_study` refuses) and every study of a batch whose
transaction fails for another reason go through `ingest_study` one by one, so the answer is
always the single path's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from psycopg_pool import AsyncConnectionPool

from services.common import manifests, outbox
from services.common.contracts import ReportIngested
from services.common.db import unit_of_work
from services.common.identifiers import is_study_id
from services.common.objectstore import ObjectStore
from services.gateway.ingest import (
    FACTS,
    FileSource,
    IngestConflict,
    IngestError,
    IngestLimits,
    ParsedInstance,
    TooLarge,
    _dicom_patient_key,
    _image_keys,
    _refuse_second_patient_id,
    _refuse_shared_images,
    _store_all,
    ingest_study,
    validate_study,
)
from services.gateway.repo import studies

log = logging.getLogger(__name__)

# Studies of one batch validated or stored at once (the store's round trips overlap; parsing is
# bound by the interpreter either way).
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


@dataclass
class _Ready:
    """A study past validation, on its way in."""

    at: int  # its place in the batch
    study: BatchStudy
    parsed: list[ParsedInstance]
    removed: list[str]


def status_of(exc: IngestError) -> int:
    """The single-study endpoint's status for a refusal."""
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, IngestConflict):  # sound alone; conflicts with a stored study (images, patient)
        return 409
    return 422


def refused(s: BatchStudy, exc: IngestError) -> StudyOutcome:
    return StudyOutcome(s.study_id, "refused", status_of(exc), str(exc))


async def ingest_batch(pool: AsyncConnectionPool, store: ObjectStore, bucket: str, batch: list[BatchStudy], *,
                       scrub: bool, protocol: str, limits: IngestLimits | None = None,
                       allow_burned_in: bool = False, concurrency: int = BATCH_CONCURRENCY) -> list[StudyOutcome]:
    """Ingest each study of the batch; the outcomes in the batch's order (a refusal is an outcome)."""
    outcomes: dict[int, StudyOutcome] = {}
    single: list[int] = []  # left to ingest_study, one by one
    gate = asyncio.Semaphore(concurrency)

    async def validate(at: int, s: BatchStudy) -> _Ready | None:
        async with gate:
            try:
                parsed, removed = await asyncio.to_thread(validate_study, s.study_id, s.patient_id, s.report,
                                                          s.files, scrub, limits, allow_burned_in)
            except IngestError as exc:
                outcomes[at] = refused(s, exc)
                return None
        return _Ready(at, s, parsed, removed)

    for at, s in enumerate(batch):
        if s.refused is not None:
            outcomes[at] = StudyOutcome(s.study_id, "refused", s.refused[0], s.refused[1])
        elif not is_study_id(s.study_id):
            single.append(at)  # ingest_study words the refusal
    todo = [at for at in range(len(batch)) if at not in outcomes and at not in single]
    ready = [r for r in await asyncio.gather(*(validate(at, batch[at]) for at in todo)) if r is not None]

    ready = await _precheck(pool, ready, outcomes)
    # Objects first, then their manifests, then the transaction (as ingest_study): a crash between
    # leaves unreferenced content-addressed objects, never a row or an event pointing at missing bytes.
    async def put(r: _Ready) -> manifests.ObjectsManifest:
        async with gate:
            await asyncio.to_thread(_store_all, store, bucket, r.parsed)
            return await asyncio.to_thread(manifests.put_objects, store, bucket, r.study.study_id,
                                           [p.obj for p in r.parsed])

    refs = await _put_manifests_locked(pool, [r.study.study_id for r in ready], lambda: asyncio.gather(
        *(put(r) for r in ready)))
    try:
        outcomes |= await _record(pool, ready, refs, protocol)
    except Exception:  # not a refusal: a database error, an event too large...; nothing was recorded
        log.exception("batch ingest transaction failed; ingesting its %d studies one by one", len(ready))
        single += [r.at for r in ready]
    for at in sorted(single):
        s = batch[at]
        try:
            result = await ingest_study(pool, store, bucket, study_id=s.study_id, patient_id=s.patient_id,
                                        report=s.report, files=s.files, scrub=scrub, protocol=protocol,
                                        limits=limits, allow_burned_in=allow_burned_in)
        except IngestError as exc:
            outcomes[at] = refused(s, exc)
            continue
        outcomes[at] = StudyOutcome(s.study_id, result.status, 201 if result.status == "ingested" else 200,
                                    objects=len(result.objects), scrubbed=result.scrubbed)
    return [outcomes[at] for at in range(len(batch))]


async def _put_manifests_locked(pool: AsyncConnectionPool, study_ids: list[str],
                                store_all: Callable[[], Awaitable[list[manifests.ObjectsManifest]]],
                                ) -> list[manifests.ObjectsManifest]:
    """Store the batch's objects and manifests holding its studies' manifest locks (as
    ingest_study does per study), so the collector (manifest_gc) never deletes one being written."""
    if not study_ids:
        return []
    async with pool.connection() as conn:
        await studies.lock_manifests_of(conn, study_ids)
        try:
            return await store_all()
        finally:
            await studies.unlock_manifests_of(conn, study_ids)


async def _precheck(pool: AsyncConnectionPool, ready: list[_Ready], outcomes: dict[int, StudyOutcome]) -> list[_Ready]:
    """Before anything is stored: studies already in are duplicates; those that would share
    images or a patient with a stored study are refused. Returns the rest."""
    if not ready:
        return []
    left = []
    async with pool.connection() as conn:
        present = await studies.present(conn, [r.study.study_id for r in ready])
        for r in ready:
            s = r.study
            if s.study_id in present:
                outcomes[r.at] = StudyOutcome(s.study_id, "duplicate", 200)
                continue
            try:
                await _refuse_shared_images(conn, s.study_id, r.parsed)
                await _refuse_second_patient_id(conn, s.study_id, s.patient_id, r.parsed)
            except IngestError as exc:
                outcomes[r.at] = refused(s, exc)
                continue
            left.append(r)
    return left


async def _record(pool: AsyncConnectionPool, ready: list[_Ready], refs: list[manifests.ObjectsManifest],
                  protocol: str) -> dict[int, StudyOutcome]:
    """One transaction for the batch: each study checked again (against the batch's earlier
    studies too), then its row and objects; the events last. Raises on anything but a refusal."""
    outcomes: dict[int, StudyOutcome] = {}
    if not ready:
        return outcomes
    events = []
    async with unit_of_work(pool) as conn:
        # concurrent ingests of one patient check one after the other (as ingest_study's lock_patient)
        await studies.lock_patients(conn, [k for r in ready if (k := _dicom_patient_key(r.parsed)) is not None])
        # and so do those that could share an image (as ingest_study's lock_images; at most 64 locks)
        await studies.lock_images(conn, [k for r in ready for k in _image_keys(r.parsed)])
        for r, manifest in zip(ready, refs, strict=True):
            s, parsed = r.study, r.parsed
            try:
                await _refuse_shared_images(conn, s.study_id, parsed)
                await _refuse_second_patient_id(conn, s.study_id, s.patient_id, parsed)
            except IngestError as exc:
                outcomes[r.at] = refused(s, exc)
                continue
            # The study's facts are those of its frontal image (the one a chest reader judges first).
            facts = next((p.facts for p in parsed if p.facts.get("view_position") in ("PA", "AP")), parsed[0].facts)
            event = ReportIngested(study_id=s.study_id, patient_id=s.patient_id, protocol=protocol,
                                   study_instance_uid=parsed[0].study_instance_uid, report_text=s.report,
                                   objects_manifest=manifest)
            if not await studies.insert(conn, s.study_id, s.patient_id, protocol, event.study_instance_uid, s.report,
                                        event.correlation_id, [facts[k] for k in FACTS], _dicom_patient_key(parsed)):
                outcomes[r.at] = StudyOutcome(s.study_id, "duplicate", 200)  # a concurrent request's, just in
                continue
            objects = [p.obj for p in parsed]
            await studies.insert_objects(conn, s.study_id, objects)
            await studies.set_manifest(conn, s.study_id, manifest.key)  # referenced: the collector keeps it
            events.append(event)
            outcomes[r.at] = StudyOutcome(s.study_id, "ingested", 201, objects=len(objects), scrubbed=r.removed)
        await outbox.record(conn, events)
    return outcomes
