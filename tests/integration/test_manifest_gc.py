"""Instance manifests no event references (issue 11 item 1 follow-up), on real Postgres and S3:
a failed ingest's manifest and a concurrent loser's are collected once past the grace period, and
so is one left under a study whose event carries its list inline; a study's own manifest never
is, nor any manifest of a study that predates recorded keys; an ingest writing a manifest holds
off the collector."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from services.common import manifests, outbox
from services.common.contracts import DicomObject, parse_event
from services.common.db import open_pool
from services.gateway.ingest import ingest_study
from services.gateway.manifest_gc import collect
from services.gateway.repo import studies
from tests.support.factories import dicom_bytes

pytestmark = pytest.mark.integration
REPORT = "No acute cardiopulmonary process."


@pytest.fixture
def store_and_bucket(infra: dict):
    """The real S3 server, with a bucket of this test's own: other tests' manifests (their studies
    live in other schemas) share the suite's objects bucket and are no study of this schema's."""
    import uuid

    from radcurate.demo import store_for

    store, bucket = store_for(infra), f"gc-{uuid.uuid4().hex[:12]}"
    store.ensure_bucket(bucket)
    return store, bucket


def listed(store, bucket: str, study_id: str) -> set[str]:
    return {k for k, _ in store.listing(bucket, f"{manifests.PREFIX}/{study_id}/")}


def stray(study_id: str) -> list[DicomObject]:
    return [DicomObject(object_key=f"dicom/sha256/00/{study_id}", sha256="00" * 32, sop_instance_uid="1.2.3",
                        series_instance_uid="1.2.4")]


async def test_only_unreferenced_manifests_past_the_grace_period_are_collected(gateway_dsn, store_and_bucket,
                                                                                tmp_path, monkeypatch):
    store, bucket = store_and_bucket
    pool = await open_pool(gateway_dsn)
    try:
        with monkeypatch.context() as long_lists:  # these studies' lists are stored, as a long study's are
            long_lists.setattr(manifests, "INLINE_MAX_BYTES", 0)
            for sid in ("GC-A", "GC-B", "GC-OLD"):
                await ingest_study(pool, store, bucket, study_id=sid, patient_id=f"P-{sid}", report=REPORT,
                                   files=[("a.dcm", dicom_bytes(tmp_path, sid))])
            # A real failed ingest: its event is too large, so the transaction rolls back after the
            # manifest was written (nothing else of it is stored).
            with pytest.raises(outbox.EventTooLarge):
                await ingest_study(pool, store, bucket, study_id="GC-FAILED", patient_id="P-GC-FAILED",
                                   report="x" * (outbox.MAX_EVENT_BYTES + 1),
                                   files=[("a.dcm", dicom_bytes(tmp_path, "GC-FAILED"))])
        # GC-INLINE's event carries its one-instance list: a manifest an earlier failed attempt
        # left under it is no one's.
        await ingest_study(pool, store, bucket, study_id="GC-INLINE", patient_id="P-GC-INLINE", report=REPORT,
                           files=[("a.dcm", dicom_bytes(tmp_path, "GC-INLINE"))])
        assert listed(store, bucket, "GC-INLINE") == set()
        left = manifests.put_objects(store, bucket, "GC-INLINE", stray("GC-INLINE")).key
        loser = manifests.put_objects(store, bucket, "GC-A", stray("GC-A")).key  # a concurrent ingest that lost
        legacy = manifests.put_objects(store, bucket, "GC-OLD", stray("GC-OLD")).key
        with psycopg.connect(gateway_dsn) as conn:  # GC-OLD was ingested before keys were recorded
            conn.execute("UPDATE studies SET objects_manifest_key = NULL WHERE study_id = 'GC-OLD'")
            events = [parse_event(r[0]) for r in conn.execute("SELECT payload FROM outbox ORDER BY id")]
        [failed] = listed(store, bucket, "GC-FAILED")
        orphans = sorted([failed, left, loser])

        young = await collect(pool, store, bucket, grace=timedelta(hours=1))
        assert (young.deleted, young.recent, young.referenced, young.unrecorded) == ([], 3, 2, 2)
        later = datetime.now(UTC) + timedelta(hours=2)
        dry = await collect(pool, store, bucket, grace=timedelta(hours=1), dry_run=True, now=later)
        assert dry.deleted == orphans and failed in listed(store, bucket, "GC-FAILED")
        done = await collect(pool, store, bucket, grace=timedelta(hours=1), now=later)
        assert done.deleted == orphans and (done.referenced, done.unrecorded) == (2, 2)
        again = await collect(pool, store, bucket, grace=timedelta(hours=1), now=later)
        assert again.deleted == []
    finally:
        await pool.close()
    assert listed(store, bucket, "GC-FAILED") == set() and loser not in listed(store, bucket, "GC-A")
    assert listed(store, bucket, "GC-INLINE") == set()
    assert legacy in listed(store, bucket, "GC-OLD") and len(listed(store, bucket, "GC-OLD")) == 2
    assert [e.objects_manifest.by_reference for e in events] == [True, True, True, False]
    for e in events:  # every event still finds its list
        assert len(manifests.get_objects(store, bucket, e.study_id, e.objects_manifest)) == 1


async def test_a_manifest_written_while_the_collector_waits_is_kept(gateway_dsn, store_and_bucket):
    """Ingest writes under the study's manifest lock: a collector that found the manifest old and
    unreferenced re-checks under that lock, sees it written again, and keeps it."""
    store, bucket = store_and_bucket
    key = manifests.put_objects(store, bucket, "GC-RETRY", stray("GC-RETRY")).key
    await asyncio.sleep(2.2)  # older than the collector's grace below
    pool = await open_pool(gateway_dsn)
    try:
        async with pool.connection() as ingest:
            await studies.lock_manifests(ingest, "GC-RETRY")  # an ingest about to write it again
            collector = asyncio.create_task(collect(pool, store, bucket, grace=timedelta(seconds=1)))
            await asyncio.sleep(1.5)
            assert not collector.done()  # waiting on the lock
            manifests.put_objects(store, bucket, "GC-RETRY", stray("GC-RETRY"))
            await studies.unlock_manifests(ingest, "GC-RETRY")
        found = await asyncio.wait_for(collector, 30)
    finally:
        await pool.close()
    assert found.deleted == [] and key in listed(store, bucket, "GC-RETRY")


async def test_the_admin_api_collects_and_refuses_a_grace_under_five_minutes(gateway_dsn, infra):
    from radcurate.client import GatewayError
    from radcurate.demo import store_for
    from tests.integration.test_ingest import gateway_api

    store, bucket = store_for(infra), infra["buckets"]["objects"]
    key = manifests.put_objects(store, bucket, "GC-API", stray("GC-API")).key
    async with gateway_api(infra, gateway_dsn) as api:
        # A dry run: the suite's bucket holds other tests' manifests (of studies in other schemas).
        found = (await api.request("POST", "/api/v1/admin/manifests/collect",
                                   json={"grace_minutes": 5, "dry_run": True})).json()
        with pytest.raises(GatewayError) as refused:
            await api.request("POST", "/api/v1/admin/manifests/collect", json={"grace_minutes": 1})
    assert key not in found["deleted"] and found["recent"] >= 1 and found["dry_run"] is True
    assert refused.value.status == 422
    assert key in listed(store, bucket, "GC-API")
