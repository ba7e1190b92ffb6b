"""Writing a built release to the object store (blocking: run it in a thread)."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from minio.error import S3Error

from services.common.consumer import PermanentError
from services.common.failures import TransientError
from services.common.objectstore import ObjectStore
from services.common.protocols.kit.release import ReleaseFiles
from services.common.settings import ServiceSettings
from services.consensus import object_checks
from services.consensus.object_checks import ObjectCheck, check_objects

COPY_WORKERS = 8


class NotDeidentified(PermanentError):
    """A release would carry an object the PS3.15 Basic Profile does not let through: nothing of
    the release is written (the message names the objects and what they carry)."""


def _refusal(bad: Mapping[str, Sequence[str]], of: int) -> NotDeidentified:
    listed = "; ".join(f"{key}: {', '.join(why[:5])}" for key, why in list(bad.items())[:5])
    return NotDeidentified(f"release refused: {len(bad)} of {of} DICOM objects are not de-identified "
                           f"(PS3.15 Basic Profile): {listed}")


def check_release_objects(store: ObjectStore, bucket: str, keys: Sequence[str],
                          known: Mapping[str, str] | None = None) -> dict[str, str]:
    """Refuse (NotDeidentified) a release whose DICOM objects are not de-identified: each object is
    checked against the profile before any copy, whatever ingest did (objects stored by an older
    RadCurate, or before the profile was tightened, are caught here).

    `known` maps an object key to the ETag of a passing check made earlier (when its study was
    decided) on the bytes with the release's recorded sha256, under today's profile version. Such
    an object is not read here: its copy is made on that ETag (If-Match, copy_release_objects),
    which the store refuses if the object was rewritten since, and then it is read and checked
    again. Every other object is read whole and checked now. Returns each key's ETag as checked,
    for the copies' If-Match."""
    unique = sorted(set(keys))
    known = known or {}
    checks = check_objects(store, bucket, [k for k in unique if k not in known])
    bad = {c.object_key: c.violations for c in checks if c.violations}
    if bad:
        raise _refusal(bad, len(unique))
    return {**{k: known[k] for k in unique if k in known}, **{c.object_key: c.etag for c in checks}}


def copy_release_objects(store: ObjectStore, settings: ServiceSettings, copies: Sequence[tuple[str, str, str]],
                         etags: Mapping[str, str] | None = None, ahead: Collection[str] = ()) -> None:
    """Server-side copies (bucket kind, source key, destination key) from the objects bucket, several
    at once: a multi-series release copies ~40 instances per study. Only after their check, and on
    the ETag that was checked (`etags`, If-Match): the store copies nothing of an object rewritten
    since. Such an object, if its check was made ahead of the release (`ahead`), is read and
    checked now and copied on its new ETag, and refused (NotDeidentified, every copy made here
    removed again) if it no longer passes; if its check was made by this release, or it changes
    again, the release is retried (TransientError) and checks it anew."""
    buckets = {"public": settings.public_bucket, "holdout": settings.holdout_bucket}
    etags = etags or {}
    lock, again = threading.Lock(), dict[str, ObjectCheck]()

    def checked_again(src: str) -> str:
        with lock:  # once per object, however many copies it has
            if src not in again:
                again[src] = object_checks.check_object(store, settings.objects_bucket, src)
        found = again[src]
        if found.violations:
            raise _refusal({src: found.violations}, len({s for _, s, _ in copies}))
        return found.etag

    def copy(item: tuple[str, str, str]) -> None:
        kind, src, dst = item
        etag = etags.get(src) or None
        for attempt in range(2):
            try:
                store.copy(buckets[kind], dst, settings.objects_bucket, src, match_etag=etag)
                return
            except S3Error as exc:
                if exc.code != "PreconditionFailed":
                    raise
                if attempt or src not in ahead:
                    raise TransientError(f"{src} changed after its de-identification check: the release is"
                                         " retried, checking it again") from exc
            etag = checked_again(src) or None

    try:
        with ThreadPoolExecutor(max_workers=COPY_WORKERS) as pool:
            list(pool.map(copy, copies))
    except NotDeidentified:  # waited for every copy: none is left running
        for kind, _, dst in copies:
            store.delete(buckets[kind], dst)
        raise


def check_and_copy(store: ObjectStore, settings: ServiceSettings, copies: Sequence[tuple[str, str, str]],
                   known: Mapping[str, str] | None = None) -> dict[str, float]:
    """Check every object of `copies` against the profile (reusing `known` checks, as
    check_release_objects says), then (all passed) copy them. Raises NotDeidentified, copying nothing.
    Returns the wall seconds of the checks and of the copies (for the release's log line)."""
    started = time.perf_counter()
    etags = check_release_objects(store, settings.objects_bucket, [src for _, src, _ in copies], known)
    checked = time.perf_counter()
    copy_release_objects(store, settings, copies, etags, ahead=known or {})
    return {"checked": checked - started, "copied": time.perf_counter() - checked}


def publish_release(store: ObjectStore, settings: ServiceSettings, rf: ReleaseFiles,
                    done: Collection[tuple[str, str, str]] = (),
                    known: Mapping[str, str] | None = None) -> dict[str, float]:
    """Check every DICOM object against the de-identification profile, then copy them, then write
    the files; the manifest goes last so that a manifest in the bucket means a complete release.
    Copies in `done` were checked and made by the caller (`check_and_copy`, beside the agreement
    report); `known`, earlier passing checks (check_release_objects). Rewriting after a crash
    produces the same bytes. Raises NotDeidentified, writing nothing more. Returns the wall
    seconds of each phase (for the log)."""
    buckets = {"public": settings.public_bucket, "holdout": settings.holdout_bucket}
    phases, started = {}, time.perf_counter()
    left = [c for c in rf.copies if c not in done]
    etags = check_release_objects(store, settings.objects_bucket, [src for _, src, _ in left], known)
    phases[f"{len(left)} more objects checked"] = time.perf_counter() - started
    copy_release_objects(store, settings, left, etags, ahead=known or {})
    phases["copied"] = time.perf_counter() - started - sum(phases.values())
    def put(item: tuple[tuple[str, str], bytes]) -> None:
        (kind, key), data = item
        store.put_bytes(buckets[kind], key, data, "application/json" if key.endswith(".json") else "text/csv")

    # The files but the manifest at once (one after another they were ~20 ms of the chain from
    # the last vote, each a round trip), then the manifest, only once every other file is stored.
    files = sorted(rf.files.items(), key=lambda kv: kv[0][1] == rf.manifest_key)
    with ThreadPoolExecutor(max_workers=COPY_WORKERS) as pool:
        list(pool.map(put, [f for f in files if f[0][1] != rf.manifest_key]))
    for item in files:
        if item[0][1] == rf.manifest_key:
            put(item)
    phases[f"{len(rf.files)} files written"] = time.perf_counter() - started - sum(phases.values())
    return phases
