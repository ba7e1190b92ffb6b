"""The de-identification check of one stored DICOM object, as a record that a later release can
reuse (blocking: run it in a thread).

A check reads the object whole, hashes the bytes it read and keeps the store's ETag of them beside
the profile's verdict. A release reuses a passing check only for the object's recorded sha256 under
the same profile version, and copies the object on the checked ETag (`If-Match`, publish.py): the
store refuses to copy bytes rewritten after their check, which are then read and checked again, so
nothing is released unchecked.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from services.common.objectstore import ObjectStore

# Bump PROFILE_REVISION whenever what deid.violations() refuses changes (its tables, or its code):
# checks recorded under another version are never reused. tests/unit/test_object_checks.py pins
# PROFILE_TABLES_SHA256 to deid's tables, so a change to them fails until both are updated.
PROFILE_REVISION = "1"
PROFILE_TABLES_SHA256 = "6b80f86201432b3fc476adb046631692cdab1e1f3c20a0eff2407f59df47ab8b"
PROFILE_VERSION = f"ps3.15-basic+clean-descriptors+modified-dates/{PROFILE_REVISION}"
CHECK_WORKERS = 8
SPOOL_IN_MEMORY = 4 << 20  # bytes of an object kept in memory while it is checked (x CHECK_WORKERS; a
# moment twice that, joined)


@dataclass(frozen=True)
class ObjectCheck:
    """One object's check: what was read (sha256, ETag) and what the profile found in it."""

    object_key: str
    sha256: str
    etag: str
    violations: tuple[str, ...]


def profile_tables_sha256() -> str:
    """A digest of the profile's tables (what deid.violations() looks for), for the version pin."""
    from services.common import deid  # pydicom: only where a check runs

    tables = [deid.METHOD, sorted(deid.REMOVE), sorted(deid.EMPTY), sorted(deid.CLEANED), list(deid.PSEUDONYMISED)]
    return hashlib.sha256(repr(tables).encode()).hexdigest()


def import_checker() -> None:
    """Import what a check (and a release's dataset card) needs: pydicom, ~0.6 s of CPU. Called in
    the background once a study is decided, so that neither a check ahead nor the release pays it
    on the chain from the last vote (at start it would cost every consensus start, also those that
    never release). numpy.random too: the release's selection draws its tie-breaks with it
    (kit/selection.py), and numpy imports it only at that first use, on the event loop before
    the release's first check can start (~6 ms of CPU quiet, ~40 ms seen under load)."""
    import numpy.random  # noqa: F401
    import pydicom.errors  # noqa: F401

    from services.common import deid  # noqa: F401


def check_object(store: ObjectStore, bucket: str, key: str) -> ObjectCheck:
    """Read one stored DICOM object whole (private or overlay elements can follow the pixel data;
    held in memory up to SPOOL_IN_MEMORY, on disk beyond; through the store's lean GET,
    `ObjectStore.read_into`) and check it against the profile."""
    # Imported on the first check, not at start: pydicom is ~0.6 s of CPU at every consensus
    # start, and only a release (or its check ahead) reads DICOM.
    from pydicom.errors import InvalidDicomError

    from services.common import deid

    digest = hashlib.sha256()
    # Small objects (most DICOM) stay in memory, as the pieces the store hands over (joined once:
    # a spooled file's writes and reads copied each byte twice); a large one goes on to disk.
    pieces: list[bytes] = []
    held = 0
    spill: Any = None

    def sink(chunk: bytes) -> None:
        nonlocal held, spill
        digest.update(chunk)
        if spill is None and held + len(chunk) > SPOOL_IN_MEMORY:
            spill = tempfile.TemporaryFile()
            spill.writelines(pieces)
            pieces.clear()
        if spill is None:
            pieces.append(bytes(chunk))
            held += len(chunk)
        else:
            spill.write(chunk)

    try:
        etag = store.read_into(bucket, key, sink)
        try:
            # BurnedInAnnotation YES reached the store only by a curator's override at ingest.
            found = deid.check_bytes(b"".join(pieces) if spill is None else spill, allow_burned_in=True)
        except (InvalidDicomError, EOFError, ValueError, TypeError, KeyError) as exc:
            found = [f"not readable as DICOM ({exc.__class__.__name__})"]
    finally:
        if spill is not None:
            spill.close()
    return ObjectCheck(key, digest.hexdigest(), etag, tuple(found))


def check_objects(store: ObjectStore, bucket: str, keys: Sequence[str]) -> list[ObjectCheck]:
    """check_object() of each distinct key, several at once (in key order)."""
    unique = sorted(set(keys))
    if not unique:
        return []
    return list(_checkers().map(lambda key: check_object(store, bucket, key), unique))


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _checkers() -> ThreadPoolExecutor:
    """The threads checks run on: started at the first check and kept (checking ahead runs a small
    round every fraction of a second while a panel votes; a pool per round started and joined
    eight threads each time). Idle threads cost nothing; the release and a round share them."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=CHECK_WORKERS, thread_name_prefix="object-check")
        return _pool
