"""Bulk ingest: many studies in one request and one transaction, each held to `ingest_study`'s checks.

One HTTP request and one transaction per study made the gateway's request machinery, the
client's request building and a dozen round trips to Postgres per study the cost of a folder
ingest (issue 15 §2). A batch runs `ingest_study`'s steps once for all its studies — the same
functions, in the same order:

1. validate and de-identify each study's files (`validate_study`);
2. refuse what is already in or would contaminate a split, on one connection (`present`, then
   `_refuse_shared_images` / `_refuse_second_patient_id` per study), before anything is stored;
3. store every object and each instance manifest too long for its event, several at a time;
4. one transaction: lock the batch's DICOM patients (sorted), then per study the contamination
   checks again (they see the batch's earlier studies); the rows, objects and outbox rows of
   those that pass, one statement each.

The contamination checks of steps 2 and 4 read what stored studies hold in four statements for
the whole batch (`_Holders`), not four per study. After the transaction, now and then
(`Statistics`), Postgres analyzes the tables those look-ups read, so that a bulk load into fresh
tables finds its holders by index rather than by reading every row twice per batch.

A study's outcome is what its own `POST /api/v1/studies` would answer: ingested, duplicate, or
refused with the status and reason; one refused study never refuses the others. A study the
batch path does not take (an id `ingest_study` refuses) and every study of a batch whose
transaction fails for another reason go through `ingest_study` one by one, so the answer is
always the single path's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import psycopg
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
    _store_all,
    ingest_study,
    patient_conflict,
    shared_pixels,
    shared_uid,
    validate_study,
)
from services.gateway.repo import studies

log = logging.getLogger(__name__)

# Studies of one batch validated or stored at once (the store's round trips overlap; parsing is
# bound by the interpreter either way).
BATCH_CONCURRENCY = 8
# Studies this process ingests before it has Postgres analyze the tables the duplicate checks
# read, then again at 4x as many (studies.analyze_holders: a bulk load into fresh tables outruns
# autovacuum's minute).
ANALYZE_FIRST = 256


class Statistics:
    """When the batches' look-ups need the planner's statistics refreshed: once this process has
    ingested `first` studies, then each time that count reaches 4x the last mark. A few ANALYZEs
    over any load (6 up to 1M studies), each a few ms on tables this size."""

    def __init__(self, first: int = ANALYZE_FIRST) -> None:
        self.inserted = 0
        self.mark = first

    def due(self, inserted: int) -> bool:
        """Count `inserted` more studies; whether the statistics are due now."""
        self.inserted += inserted
        if self.inserted < self.mark:
            return False
        while self.mark <= self.inserted:
            self.mark *= 4
        return True


_statistics = Statistics()


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

    def validate_all(part: list[int]) -> list[_Ready]:
        ready = []
        for at in part:
            s = batch[at]
            try:
                parsed, removed = validate_study(s.study_id, s.patient_id, s.report, s.files, scrub, limits,
                                                 allow_burned_in)
            except IngestError as exc:
                outcomes[at] = refused(s, exc)
                continue
            ready.append(_Ready(at, s, parsed, removed))
        return ready

    async def validate(part: list[int]) -> list[_Ready]:
        async with gate:
            return await asyncio.to_thread(validate_all, part)

    for at, s in enumerate(batch):
        if s.refused is not None:
            outcomes[at] = StudyOutcome(s.study_id, "refused", s.refused[0], s.refused[1])
        elif not is_study_id(s.study_id):
            single.append(at)  # ingest_study words the refusal
    todo = [at for at in range(len(batch)) if at not in outcomes and at not in single]
    # `concurrency` parts validated at once, each part's studies in turn in one worker thread: parsing
    # holds the interpreter, so a trip to a thread per study bought no overlap, only its own cost.
    parts = [todo[i::concurrency] for i in range(min(concurrency, len(todo)))]
    ready = sorted((r for part in await asyncio.gather(*(validate(p) for p in parts)) for r in part),
                   key=lambda r: r.at)

    ready = await _precheck(pool, ready, outcomes)
    # Objects first, then the manifests too long to travel in their events, then the transaction
    # (as ingest_study): a crash between leaves unreferenced content-addressed objects, never a row
    # or an event pointing at missing bytes.
    planned = [manifests.plan(r.study.study_id, [p.obj for p in r.parsed]) for r in ready]

    def store_all(part: list[int]) -> None:
        for at in part:  # each study's objects, then its manifest (if stored)
            _store_all(store, bucket, ready[at].parsed)
            manifests.store_planned(store, bucket, *planned[at])

    async def put(part: list[int]) -> None:
        async with gate:  # `concurrency` streams of PUTs at once, one trip to a worker thread each
            await asyncio.to_thread(store_all, part)

    async def put_all() -> None:
        width = min(concurrency, len(ready))
        await asyncio.gather(*(put(list(range(i, len(ready), width))) for i in range(width)))

    await _put_manifests_locked(pool, [r.study.study_id for r, (_, data) in zip(ready, planned, strict=True)
                                       if data is not None], put_all)
    refs = [manifest for manifest, _ in planned]
    try:
        outcomes |= await _record(pool, ready, refs, protocol)
    except Exception:  # not a refusal: a database error, an event too large...; nothing was recorded
        log.exception("batch ingest transaction failed; ingesting its %d studies one by one", len(ready))
        single += [r.at for r in ready]
    else:
        await _refresh_statistics(pool, sum(1 for r in ready if outcomes[r.at].status == "ingested"))
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


async def _refresh_statistics(pool: AsyncConnectionPool, inserted: int) -> None:
    """ANALYZE the looked-up tables when `_statistics` says so, after the batch committed: a
    failure is logged, never the batch's (its studies are in)."""
    if not _statistics.due(inserted):
        return
    try:
        async with pool.connection() as conn:
            await studies.analyze_holders(conn)
    except psycopg.Error:
        log.warning("ANALYZE of the ingest look-up tables failed; the planner keeps its statistics", exc_info=True)


async def _put_manifests_locked(pool: AsyncConnectionPool, study_ids: list[str],
                                store_all: Callable[[], Awaitable[None]]) -> None:
    """Store the batch's objects and manifests holding the manifest locks of the studies in
    `study_ids` (those whose manifest is stored; as ingest_study does per study), so the collector
    (manifest_gc) never deletes one being written. None to lock: no connection is taken."""
    if not study_ids:
        await store_all()
        return
    async with pool.connection() as conn:
        await studies.lock_manifests_of(conn, study_ids)
        try:
            await store_all()
        finally:
            await studies.unlock_manifests_of(conn, study_ids)


class _Holders:
    """Which studies hold what a batch's studies carry (StudyInstanceUID, SOP Instance UIDs,
    pixel digests, DICOM patient): the stored ones, read in four statements for the whole batch,
    then each study of the batch accepted so far. `refusal` is `_refuse_shared_images` and
    `_refuse_second_patient_id` of ingest.py, in their order and words, without a statement per
    study (when several studies hold a thing, the first by study id and SOP Instance UID is named)."""

    def __init__(self) -> None:
        self.study_uid: dict[str, set[tuple[str, str]]] = defaultdict(set)  # uid: {(study id, uid)}
        self.sop: dict[str, set[tuple[str, str]]] = defaultdict(set)  # uid: {(study id, uid)}
        self.pixels: dict[str, set[tuple[str, str]]] = defaultdict(set)  # digest: {(study id, its SOP UID)}
        self.patient: dict[str, set[tuple[str, str]]] = defaultdict(set)  # key: {(study id, patient id)}

    @classmethod
    async def stored(cls, conn: psycopg.AsyncConnection, ready: list[_Ready]) -> _Holders:
        holders = cls()
        rows = await studies.holders_of(
            conn, sorted({r.parsed[0].study_instance_uid for r in ready}),
            sorted({p.obj.sop_instance_uid for r in ready for p in r.parsed}),
            sorted({d for r in ready for p in r.parsed if (d := p.obj.pixel_sha256) is not None}),
            sorted({k for r in ready if (k := _dicom_patient_key(r.parsed)) is not None}))
        for row in rows["study_uid"]:
            holders.study_uid[row["shared"]].add((row["study_id"], row["shared"]))
        for row in rows["sop"]:
            holders.sop[row["shared"]].add((row["study_id"], row["shared"]))
        for row in rows["pixels"]:
            holders.pixels[row["pixel_sha256"]].add((row["study_id"], row["shared"]))
        for row in rows["patient"]:
            holders.patient[row["dicom_patient_key"]].add((row["study_id"], row["patient_id"]))
        return holders

    def add(self, r: _Ready) -> None:
        """The study is in (or will be when the transaction commits): later studies are checked against it."""
        sid = r.study.study_id
        self.study_uid[r.parsed[0].study_instance_uid].add((sid, r.parsed[0].study_instance_uid))
        for p in r.parsed:
            self.sop[p.obj.sop_instance_uid].add((sid, p.obj.sop_instance_uid))
            if p.obj.pixel_sha256 is not None:
                self.pixels[p.obj.pixel_sha256].add((sid, p.obj.sop_instance_uid))
        if (key := _dicom_patient_key(r.parsed)) is not None:
            self.patient[key].add((sid, r.study.patient_id))

    def refusal(self, r: _Ready) -> IngestError | None:
        sid, parsed = r.study.study_id, r.parsed

        def other(held: set[tuple[str, str]]) -> tuple[str, str] | None:
            return min((h for h in held if h[0] != sid), default=None)

        if (row := other(self.study_uid.get(parsed[0].study_instance_uid, set()))) is not None:
            return shared_uid(sid, "StudyInstanceUID", row[1], row[0])
        sops = [h for p in parsed if (h := other(self.sop.get(p.obj.sop_instance_uid, set()))) is not None]
        if sops:
            row = min(sops)
            return shared_uid(sid, "SOPInstanceUID", row[1], row[0])
        pixels = [(*h, d) for p in parsed if (d := p.obj.pixel_sha256) is not None
                  and (h := other(self.pixels.get(d, set()))) is not None]
        if pixels:
            study, sop, digest = min(pixels)
            return shared_pixels(sid, parsed, digest, study, sop)
        key = _dicom_patient_key(parsed)
        if key is not None:
            held = {h for h in self.patient.get(key, set()) if h[1] != r.study.patient_id}
            if (row := other(held)) is not None:
                return patient_conflict(sid, r.study.patient_id, row[1], row[0])
        return None


async def _precheck(pool: AsyncConnectionPool, ready: list[_Ready], outcomes: dict[int, StudyOutcome]) -> list[_Ready]:
    """Before anything is stored: studies already in are duplicates; those that would share
    images or a patient with a stored study are refused. Returns the rest."""
    if not ready:
        return []
    left = []
    async with pool.connection() as conn:
        present = await studies.present(conn, [r.study.study_id for r in ready])
        holders = await _Holders.stored(conn, [r for r in ready if r.study.study_id not in present])
    for r in ready:
        s = r.study
        if s.study_id in present:
            outcomes[r.at] = StudyOutcome(s.study_id, "duplicate", 200)
        elif (exc := holders.refusal(r)) is not None:
            outcomes[r.at] = refused(s, exc)
        else:
            left.append(r)
    return left


async def _record(pool: AsyncConnectionPool, ready: list[_Ready], refs: list[manifests.ObjectsManifest],
                  protocol: str) -> dict[int, StudyOutcome]:
    """One transaction for the batch: each study checked again (against the batch's earlier
    studies too), then the rows and objects of those that pass; the events last. Raises on
    anything but a refusal."""
    outcomes: dict[int, StudyOutcome] = {}
    if not ready:
        return outcomes
    async with unit_of_work(pool) as conn:
        # concurrent ingests of one patient check one after the other (as ingest_study's lock_patient)
        await studies.lock_patients(conn, [k for r in ready if (k := _dicom_patient_key(r.parsed)) is not None])
        # and so do those that could share an image (as ingest_study's lock_images; at most 64 locks)
        await studies.lock_images(conn, [k for r in ready for k in _image_keys(r.parsed)])
        holders = await _Holders.stored(conn, ready)  # under the locks: what concurrent batches committed
        accepted: list[tuple[_Ready, ReportIngested]] = []
        taken: set[str] = set()
        for r, manifest in zip(ready, refs, strict=True):
            s, parsed = r.study, r.parsed
            if s.study_id in taken:  # twice in one batch: in once
                outcomes[r.at] = StudyOutcome(s.study_id, "duplicate", 200)
                continue
            if (exc := holders.refusal(r)) is not None:
                outcomes[r.at] = refused(s, exc)
                continue
            holders.add(r)
            taken.add(s.study_id)
            accepted.append((r, ReportIngested(study_id=s.study_id, patient_id=s.patient_id, protocol=protocol,
                                               study_instance_uid=parsed[0].study_instance_uid, report_text=s.report,
                                               objects_manifest=manifest)))
        inserted = await studies.insert_many(conn, [_study_row(r, event, protocol) for r, event in accepted])
        events = []
        for r, event in accepted:
            s = r.study
            if s.study_id not in inserted:
                outcomes[r.at] = StudyOutcome(s.study_id, "duplicate", 200)  # a concurrent request's, just in
                continue
            events.append(event)
            outcomes[r.at] = StudyOutcome(s.study_id, "ingested", 201, objects=len(r.parsed), scrubbed=r.removed)
        await studies.insert_objects_of(conn, [(r.study.study_id, p.obj) for r, _ in accepted
                                               if r.study.study_id in inserted for p in r.parsed])
        await outbox.record(conn, events)
    return outcomes


def _study_row(r: _Ready, event: ReportIngested, protocol: str) -> tuple[object, ...]:
    """The study's row for studies.insert_many, its manifest key recorded (the collector keeps it)."""
    s, parsed = r.study, r.parsed
    # The study's facts are those of its frontal image (the one a chest reader judges first).
    facts = next((p.facts for p in parsed if p.facts.get("view_position") in ("PA", "AP")), parsed[0].facts)
    return (s.study_id, s.patient_id, protocol, event.study_instance_uid, s.report, event.correlation_id,
            *(facts[k] for k in FACTS), _dicom_patient_key(parsed), event.objects_manifest.key)
