"""Issue 11 item 1 on real Postgres and S3: a long instance list is written to the object store
before its event is recorded, the event stays small whatever the study's size, and consensus
fetches the list and checks it (tampered: a permanent error; the store unreachable: transient).
A short one travels in the event (issue 15) and is read from there."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from minio import Minio
from psycopg.rows import dict_row

import services
from radcurate.bulk_ingest import study_paths
from radcurate.demo import store_for
from radcurate.synth.lumbar import synth_lumbar
from services.common import manifests, outbox
from services.common.contracts import ModelProvenance, ObjectsManifest, Protocol, ReviewAssigned, parse_event
from services.common.db import apply_migrations, open_pool
from services.common.failures import is_transient
from services.common.objectstore import ObjectStore, http_client
from services.consensus.handlers import build_handlers
from services.gateway.ingest import ingest_study, validate_study
from tests.support.factories import add_series

pytestmark = pytest.mark.integration
INSTANCES = 2400
PROV = ModelProvenance(backend="rules")


@pytest.fixture(scope="module")
def big_study(tmp_path_factory) -> tuple[Path, dict]:
    """A synthetic lumbar MRI grown to 2,400 instances (its three series plus thin axial series)."""
    out = tmp_path_factory.mktemp("big")
    synth_lumbar(1, seed=7, out_dir=out)
    row = next(csv.DictReader(open(out / "reports.csv")))
    add_series(out / "dicom" / row["study_id"], instances=INSTANCES)
    return out, row


class NoManifests(ObjectStore):
    """The real store, refusing to write manifests (the store failing between objects and event)."""

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if key.startswith(f"{manifests.PREFIX}/"):
            raise ConnectionError("object store went away")
        super().put_bytes(bucket, key, data, content_type)


async def test_a_study_of_2400_instances_is_announced_by_a_small_event_and_its_manifest(gateway_dsn, infra, big_study):
    data, row = big_study
    store, bucket = store_for(infra), infra["buckets"]["objects"]
    pool = await open_pool(gateway_dsn)
    try:
        result = await ingest_study(pool, store, bucket, study_id=row["study_id"], patient_id=row["patient_id"],
                                    report=row["report"], files=study_paths(data, row["study_id"]),
                                    protocol=Protocol.LUMBAR)
    finally:
        await pool.close()
    assert result.status == "ingested" and len(result.objects) == INSTANCES
    with psycopg.connect(gateway_dsn) as conn:
        [(payload, size)] = conn.execute("SELECT payload, octet_length(payload::text) FROM outbox").fetchall()
    assert size < 2000 < outbox.MAX_EVENT_BYTES
    event = parse_event(payload)
    assert event.objects_manifest.count == INSTANCES
    listed = manifests.get_objects(store, bucket, row["study_id"], event.objects_manifest)
    assert sorted(o.sop_instance_uid for o in listed) == sorted(o.sop_instance_uid for o in result.objects)


async def test_no_event_is_recorded_when_its_manifest_cannot_be_written(gateway_dsn, infra, big_study):
    data, row = big_study
    real = store_for(infra)
    pool = await open_pool(gateway_dsn)
    try:
        with pytest.raises(ConnectionError):
            await ingest_study(pool, NoManifests(real.client), infra["buckets"]["objects"], study_id=row["study_id"],
                               patient_id=row["patient_id"], report=row["report"],
                               files=study_paths(data, row["study_id"])[:40], protocol=Protocol.LUMBAR)
    finally:
        await pool.close()
    with psycopg.connect(gateway_dsn) as conn:
        assert conn.execute("SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM studies)").fetchone() == (0, 0)


@pytest.fixture
async def consensus_db(fresh_schema):
    apply_migrations(fresh_schema, sorted((Path(services.__file__).parent / "consensus" / "migrations").glob("*.sql")))
    async with await psycopg.AsyncConnection.connect(fresh_schema, row_factory=dict_row) as conn:
        yield conn


def assignment(study_id: str, manifest: ObjectsManifest) -> ReviewAssigned:
    return ReviewAssigned(study_id=study_id, protocol=Protocol.LUMBAR, run_id="run", patient_id="P", readers=["r1"],
                          reason="", difficulty="easy", suggested=[], taxonomy_version="lumbar-v1", extraction=PROV,
                          mapping=PROV, objects_manifest=manifest)


async def test_consensus_keeps_the_fetched_list_and_refuses_a_tampered_one_for_good(consensus_db, infra, big_study):
    data, row = big_study
    store, bucket = store_for(infra), infra["buckets"]["objects"]
    parsed, _ = validate_study(row["study_id"], row["patient_id"], row["report"],
                               study_paths(data, row["study_id"])[:40], False, None, False)
    good = manifests.put_objects(store, bucket, "CONS-1", [p.obj for p in parsed])
    settings = SimpleNamespace(rules_file=None, evaluation_bootstrap=50, objects_bucket=bucket)
    handler = build_handlers(SimpleNamespace(settings=settings, store=store))["review-assigned"]
    event = assignment("CONS-1", good)
    fetched = await handler.prepare(event)
    async with consensus_db.transaction():
        await handler.apply(consensus_db, event, fetched)
    stored = await (await consensus_db.execute("SELECT objects FROM assignments WHERE study_id = 'CONS-1'")).fetchone()
    assert [o["sop_instance_uid"] for o in stored["objects"]] == [p.obj.sop_instance_uid for p in parsed]

    # Someone rewrites the manifest after the event was recorded: one instance fewer.
    _, original = manifests.describe("CONS-1", [p.obj for p in parsed])
    store.put_bytes(bucket, good.key, manifests.encode("CONS-1", [p.obj for p in parsed][:-1]))
    mismatch = f"instance manifest {good.key} of study CONS-1: sha256"
    with pytest.raises(manifests.ManifestMismatch, match=mismatch) as bad:
        await handler.prepare(assignment("CONS-1", good))
    assert not is_transient(bad.value)
    store.put_bytes(bucket, good.key, original)
    assert len(await handler.prepare(assignment("CONS-1", good))) == 40


async def test_a_store_that_does_not_answer_is_transient_never_a_dead_letter(infra):
    ref, _ = manifests.describe("CONS-2", [])
    closed = ObjectStore(Minio("127.0.0.1:9", access_key="x", secret_key="y", secure=False, region="us-east-1",
                               http_client=http_client(0.5, 0.5)))
    with pytest.raises(Exception) as caught:
        await manifests.aget_objects(closed, infra["buckets"]["objects"], "CONS-2", ref)
    assert is_transient(caught.value)
