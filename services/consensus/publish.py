"""Writing a built release to the object store (blocking: run it in a thread)."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor

from minio.commonconfig import CopySource

from services.common.consumer import PermanentError
from services.common.objectstore import ObjectStore
from services.common.protocols.kit.release import ReleaseFiles
from services.common.settings import ServiceSettings

COPY_WORKERS = 8
_CHUNK = 1 << 20


class NotDeidentified(PermanentError):
    """A release would carry an object the PS3.15 Basic Profile does not let through: nothing of
    the release is written (the message names the objects and what they carry)."""


def object_violations(store: ObjectStore, bucket: str, key: str) -> list[str]:
    """deid.violations() of one stored DICOM object, read whole (spooled to a temporary file:
    private or overlay elements can follow the pixel data, and objects can be large)."""
    # Imported on the first release check, not at start: pydicom is ~0.6 s of CPU at every
    # consensus start, and only a release reads DICOM.
    from pydicom.errors import InvalidDicomError

    from services.common import deid

    response = store.client.get_object(bucket, key)
    try:
        with tempfile.TemporaryFile() as fp:
            shutil.copyfileobj(response, fp, _CHUNK)
            fp.seek(0)
            try:
                # BurnedInAnnotation YES reached the store only by a curator's override at ingest.
                return deid.check_bytes(fp, allow_burned_in=True)
            except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError) as exc:
                return [f"not readable as DICOM ({exc.__class__.__name__})"]
    finally:
        response.close()
        response.release_conn()


def check_release_objects(store: ObjectStore, bucket: str, keys: list[str]) -> None:
    """Refuse (NotDeidentified) a release whose DICOM objects are not de-identified: each object is
    read and checked against the profile before any copy, whatever ingest did (objects stored by an
    older RadCurate, or before the profile was tightened, are caught here)."""
    unique = sorted(set(keys))
    with ThreadPoolExecutor(max_workers=COPY_WORKERS) as pool:
        found = dict(zip(unique, pool.map(lambda key: object_violations(store, bucket, key), unique), strict=True))
    bad = {key: why for key, why in found.items() if why}
    if bad:
        listed = "; ".join(f"{key}: {', '.join(why[:5])}" for key, why in list(bad.items())[:5])
        raise NotDeidentified(f"release refused: {len(bad)} of {len(unique)} DICOM objects are not de-identified "
                              f"(PS3.15 Basic Profile): {listed}")


def copy_release_objects(store: ObjectStore, settings: ServiceSettings, copies: Sequence[tuple[str, str, str]]) -> None:
    """Server-side copies (bucket kind, source key, destination key) from the objects bucket, several
    at once: a multi-series release copies ~40 instances per study. Only after their check."""
    buckets = {"public": settings.public_bucket, "holdout": settings.holdout_bucket}

    def copy(item: tuple[str, str, str]) -> None:
        kind, src, dst = item
        store.client.copy_object(buckets[kind], dst, CopySource(settings.objects_bucket, src))

    with ThreadPoolExecutor(max_workers=COPY_WORKERS) as pool:
        list(pool.map(copy, copies))


def check_and_copy(store: ObjectStore, settings: ServiceSettings, copies: Sequence[tuple[str, str, str]]) -> None:
    """Check every object of `copies` against the profile, then (all passed) copy them. Raises
    NotDeidentified, copying nothing."""
    check_release_objects(store, settings.objects_bucket, [src for _, src, _ in copies])
    copy_release_objects(store, settings, copies)


def publish_release(store: ObjectStore, settings: ServiceSettings, rf: ReleaseFiles,
                    done: Collection[tuple[str, str, str]] = ()) -> dict[str, float]:
    """Check every DICOM object against the de-identification profile, then copy them, then write
    the files; the manifest goes last so that a manifest in the bucket means a complete release.
    Copies in `done` were checked and made by the caller (`check_and_copy`, beside the agreement
    report). Rewriting after a crash produces the same bytes. Raises NotDeidentified, writing
    nothing more. Returns the wall seconds of each phase (for the log)."""
    buckets = {"public": settings.public_bucket, "holdout": settings.holdout_bucket}
    phases, started = {}, time.perf_counter()
    left = [c for c in rf.copies if c not in done]
    check_release_objects(store, settings.objects_bucket, [src for _, src, _ in left])
    phases[f"{len(left)} more objects checked"] = time.perf_counter() - started
    copy_release_objects(store, settings, left)
    phases["copied"] = time.perf_counter() - started - sum(phases.values())
    for (kind, key), data in sorted(rf.files.items(), key=lambda kv: kv[0][1] == rf.manifest_key):
        content_type = "application/json" if key.endswith(".json") else "text/csv"
        store.put_bytes(buckets[kind], key, data, content_type)
    phases[f"{len(rf.files)} files written"] = time.perf_counter() - started - sum(phases.values())
    return phases
