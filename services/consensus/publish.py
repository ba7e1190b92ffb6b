"""Writing a built release to the object store (blocking: run it in a thread)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from minio.commonconfig import CopySource

from services.common.objectstore import ObjectStore
from services.common.protocols.kit.release import ReleaseFiles
from services.common.settings import ServiceSettings

COPY_WORKERS = 8


def publish_release(store: ObjectStore, settings: ServiceSettings, rf: ReleaseFiles) -> None:
    """Copy the DICOM objects, then write the files; the manifest goes last so that a manifest in
    the bucket means a complete release. Rewriting after a crash produces the same bytes."""
    buckets = {"public": settings.public_bucket, "holdout": settings.holdout_bucket}

    def copy(item: tuple[str, str, str]) -> None:
        kind, src, dst = item
        store.client.copy_object(buckets[kind], dst, CopySource(settings.objects_bucket, src))

    # A multi-series release copies ~40 instances per study: server-side copies in parallel, not one by one.
    with ThreadPoolExecutor(max_workers=COPY_WORKERS) as pool:
        list(pool.map(copy, rf.copies))
    for (kind, key), data in sorted(rf.files.items(), key=lambda kv: kv[0][1] == rf.manifest_key):
        content_type = "application/json" if key.endswith(".json") else "text/csv"
        store.put_bytes(buckets[kind], key, data, content_type)
