"""Instance manifests: a study's DICOM instance list, carried by events inline or by reference.

Events stay small by design (the broker refuses a message over 1 MiB, `outbox.record` one over
512 KiB), but an instance list grows with the study: ~450 B per instance, so a lumbar MRI with
many series (2,400 instances) would not fit. So the producer (`for_event`) decides by size:

- a list whose canonical JSON is at most `INLINE_MAX_BYTES` (~18 instances: every chest
  radiograph study) travels inside the event, `ObjectsManifest(count, inline)`: no object-store
  write at ingest and no fetch by a reader. Storing it cost a second PUT per study, as much S3
  server CPU as the study's DICOM itself (issue 15 §2);
- a longer one is written as a JSON object under a content-addressed key *before* the event is
  recorded (so the outbox never references a missing object), and the event carries
  `ObjectsManifest(key, sha256, count)`.

Both are schema 3 of the events that carry a manifest: readers have read `inline` since schema 3
(upcast schema-2 events arrive that way), so old and new readers take either. Services that only
pass the list on (extractor, mapper, sampler) pass the manifest as it came; a service that needs
the list takes the inline one, or fetches the stored one and checks it against the event:

- bytes whose sha256 differs from the event's, a list of another study or of another length, a
  key that is not this study's manifest key: `ManifestMismatch` (a `PermanentError`: the event is
  dead-lettered with that message; retrying cannot make the bytes right);
- no object at the key: `ManifestMissing` (permanent too: the producer wrote it before the event
  existed, so it was deleted; restore it and replay the dead letter);
- any other failure to fetch (the store down, slow, refusing our credentials): transient, so the
  consumer pauses and retries until the store answers; it is never dead-lettered.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from minio.error import S3Error

from services.common.contracts import DicomObject, ObjectsManifest
from services.common.failures import PermanentError, TransientError
from services.common.objectstore import ObjectStore, sha256_hex

PREFIX = "manifests"
# The largest instance list (its canonical JSON, `encode`) an event carries inline. It keeps every
# event that passes the list on well under the outbox's 512 KiB with any report, and costs the
# four hops it travels (gateway -> extractor -> mapper -> sampler -> consensus) at most 8 KiB
# each; a list over it costs one PUT at ingest and one GET where it is read instead.
INLINE_MAX_BYTES = 8 * 1024
_MISSING = frozenset({"NoSuchKey", "NoSuchObject", "NotFound"})


class ManifestMismatch(PermanentError):
    """The manifest's bytes are not what the event says they are."""


class ManifestMissing(PermanentError):
    """No object at the manifest's key."""


def manifest_key(study_id: str, sha256: str) -> str:
    """Content-addressed per study: the same list for the same study is the same object."""
    return f"{PREFIX}/{study_id}/{sha256}.json"


def encode(study_id: str, objects: Sequence[DicomObject]) -> bytes:
    """The manifest's bytes: canonical JSON (sorted keys, compact), so equal lists hash equal."""
    body = {"study_id": study_id, "objects": [o.model_dump(mode="json") for o in objects]}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def describe(study_id: str, objects: Sequence[DicomObject]) -> tuple[ObjectsManifest, bytes]:
    """The reference an event carries for `objects`, and the bytes to store under its key."""
    data = encode(study_id, objects)
    digest = sha256_hex(data)
    return ObjectsManifest(key=manifest_key(study_id, digest), sha256=digest, count=len(objects)), data


def put_objects(store: ObjectStore, bucket: str, study_id: str, objects: Sequence[DicomObject]) -> ObjectsManifest:
    """Store a study's instance list and return its reference. Blocking: call it before the
    transaction that records the event (async callers through `asyncio.to_thread`)."""
    manifest, data = describe(study_id, objects)
    store.put_bytes(bucket, manifest.key, data, content_type="application/json")
    return manifest


def plan(study_id: str, objects: Sequence[DicomObject]) -> tuple[ObjectsManifest, bytes | None]:
    """The manifest an event carries for `objects`, and the bytes to store under its key first
    (None: the list is at most INLINE_MAX_BYTES and travels inline, nothing to store)."""
    data = encode(study_id, objects)
    if len(data) <= INLINE_MAX_BYTES:
        return ObjectsManifest(count=len(objects), inline=list(objects)), None
    digest = sha256_hex(data)
    return ObjectsManifest(key=manifest_key(study_id, digest), sha256=digest, count=len(objects)), data


def store_planned(store: ObjectStore, bucket: str, manifest: ObjectsManifest, data: bytes | None) -> None:
    """Write what `plan` said to store (nothing for an inline manifest). Blocking, before the
    transaction that records the event."""
    if data is not None:
        store.put_bytes(bucket, manifest.key, data, content_type="application/json")


def for_event(store: ObjectStore, bucket: str, study_id: str, objects: Sequence[DicomObject]) -> ObjectsManifest:
    """The manifest a new event carries: inline for a small list, else stored (`put_objects`) and
    referenced. Blocking when it stores; see `plan` to know beforehand whether it will."""
    manifest, data = plan(study_id, objects)
    store_planned(store, bucket, manifest, data)
    return manifest


def decode(study_id: str, manifest: ObjectsManifest, data: bytes) -> list[DicomObject]:
    """The instance list in `data`, checked against the event's reference (ManifestMismatch)."""
    where = f"instance manifest {manifest.key} of study {study_id}"
    digest = sha256_hex(data)
    if digest != manifest.sha256:
        raise ManifestMismatch(f"{where}: sha256 of the stored bytes is {digest}, the event says {manifest.sha256}"
                               " (the object was changed after the event was recorded)")
    try:
        body = json.loads(data)
        objects = [DicomObject.model_validate(o) for o in body["objects"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestMismatch(f"{where}: not a manifest ({type(exc).__name__}: {str(exc)[:200]})") from None
    if body.get("study_id") != study_id:
        raise ManifestMismatch(f"{where}: lists the instances of study {body.get('study_id')!r}")
    if len(objects) != manifest.count:
        raise ManifestMismatch(f"{where}: lists {len(objects)} instances, the event says {manifest.count}")
    return objects


def get_objects(store: ObjectStore, bucket: str, study_id: str, manifest: ObjectsManifest) -> list[DicomObject]:
    """A study's instance list: the inline one, or fetched and verified. Blocking for a stored
    one; see `aget_objects`."""
    if not manifest.by_reference:
        return list(manifest.inline)
    if manifest.key != manifest_key(study_id, manifest.sha256):
        raise ManifestMismatch(f"instance manifest key {manifest.key!r} is not study {study_id}'s manifest key"
                               f" {manifest_key(study_id, manifest.sha256)!r}")
    try:
        data = store.get_bytes(bucket, manifest.key)
    except S3Error as exc:
        if exc.code in _MISSING:
            raise ManifestMissing(f"instance manifest {manifest.key} of study {study_id} is missing from bucket"
                                  f" {bucket}; restore it and replay this event") from None
        raise TransientError(f"instance manifest {manifest.key} could not be fetched: {exc.code}") from exc
    return decode(study_id, manifest, data)


async def aget_objects(store: ObjectStore, bucket: str, study_id: str,
                       manifest: ObjectsManifest) -> list[DicomObject]:
    """`get_objects` off the event loop (use it in a handler's `prepare`, outside any transaction)."""
    if not manifest.by_reference:
        return list(manifest.inline)
    return await asyncio.to_thread(get_objects, store, bucket, study_id, manifest)


def inline_objects(manifest: ObjectsManifest) -> list[DicomObject]:
    """The list of an inline manifest; ValueError for one by reference (it must be fetched)."""
    if manifest.by_reference:
        raise ValueError(f"instance manifest {manifest.key} is in the object store: fetch it (aget_objects)")
    return list(manifest.inline)
