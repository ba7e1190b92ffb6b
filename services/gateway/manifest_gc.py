"""Collect instance manifests that no event references (what a failed ingest leaves behind).

Ingest writes a study's manifest (`manifests/<study_id>/<sha256>.json`) before the transaction
that records the study and its report-ingested event; when that transaction fails (the study id
taken by a concurrent ingest, a conflict found in the transaction, the database gone), the
manifest stays with nothing pointing at it. Only report-ingested introduces a manifest key (the
other services pass it on), and the transaction that records it also records the key on the
study row (`studies.objects_manifest_key`), so a manifest is referenced exactly when a study row
names it. A study whose event carries its short instance list inline records '' (no stored
manifest is its own: ingest wrote none), so a manifest an earlier failed attempt left under it is
collected like any other. The collector deletes a manifest only when

- its study has a row naming another key, or has no row at all (the ingest never committed), and
- it was last written more than `grace` ago (an ingest between its write and its commit is young),

and keeps every manifest of a study whose row records no key (ingested before keys were recorded:
its events may name any of them). Each deletion re-checks the row and the object's age under the
study's manifest lock, which ingest holds while it writes one: an ingest writing the same key
again (a retried failed ingest, same files) either refreshed its age before the check or waits.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from psycopg_pool import AsyncConnectionPool

from services.common import manifests
from services.common.objectstore import ObjectStore
from services.gateway.repo import studies


@dataclass
class Collection:
    """What a collection found: deleted (or, dry run, would delete) and what it kept, by reason."""

    deleted: list[str] = field(default_factory=list)
    referenced: int = 0  # a study row names it
    recent: int = 0  # unreferenced, but younger than the grace period
    unrecorded: int = 0  # its study predates recorded keys: kept


def _study_of(key: str) -> str | None:
    """The study id in `manifests/<study_id>/<sha256>.json`, or None for a key of another shape."""
    parts = key.split("/")
    if len(parts) == 3 and parts[0] == manifests.PREFIX and parts[2].endswith(".json"):
        return parts[1]
    return None


async def collect(pool: AsyncConnectionPool, store: ObjectStore, bucket: str, *, grace: timedelta,
                  dry_run: bool = False, now: datetime | None = None) -> Collection:
    """Delete (unless `dry_run`) the manifests no study references that are older than `grace`."""
    cutoff = (now or datetime.now(UTC)) - grace
    listing = await asyncio.to_thread(store.listing, bucket, f"{manifests.PREFIX}/")
    found = Collection()
    async with pool.connection() as conn:
        for key, modified in sorted(listing):
            study_id = _study_of(key)
            if study_id is None:  # not a manifest this code wrote: never ours to delete
                found.unrecorded += 1
                continue
            row = await studies.manifest_owner(conn, study_id)
            if row is not None and row["key"] is None:
                found.unrecorded += 1
            elif row is not None and row["key"] == key:
                found.referenced += 1
            elif modified >= cutoff:
                found.recent += 1
            elif dry_run:
                found.deleted.append(key)
            elif await _delete_if_still_orphan(conn, store, bucket, study_id, key, cutoff):
                found.deleted.append(key)
            else:
                found.recent += 1
        await conn.commit()
    return found


async def _delete_if_still_orphan(conn, store: ObjectStore, bucket: str, study_id: str, key: str,
                                  cutoff: datetime) -> bool:
    """Under the study's manifest lock: still unreferenced and still old, then delete."""
    await studies.lock_manifests(conn, study_id)
    try:
        row = await studies.manifest_owner(conn, study_id)
        await conn.commit()
        if row is not None and (row["key"] is None or row["key"] == key):
            return False
        modified = await asyncio.to_thread(store.modified_at, bucket, key)
        if modified is None or modified >= cutoff:
            return False
        await asyncio.to_thread(store.delete, bucket, key)
        return True
    finally:
        await studies.unlock_manifests(conn, study_id)
