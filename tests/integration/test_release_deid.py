"""Issue 11 item 8: a release never contains an element the PS3.15 Basic Profile removes. Every
DICOM object is read and checked before anything is written to the release buckets (real S3 server)."""

from __future__ import annotations

import io
import uuid
from types import SimpleNamespace

import pydicom
import pytest

from services.common import deid
from services.common.objectstore import ObjectStore
from services.common.protocols.kit.release import ReleaseFiles
from services.consensus.publish import NotDeidentified, publish_release
from services.gateway.ingest import parse_instance
from tests.unit.test_deid import seeded

BUCKETS = {"objects_bucket": "radcurate-objects", "public_bucket": "radcurate-public",
           "holdout_bucket": "radcurate-holdout"}


@pytest.fixture
def store(infra: dict) -> ObjectStore:
    from radcurate.demo import store_for

    store = store_for(infra)
    for bucket in BUCKETS.values():
        store.ensure_bucket(bucket)
    return store


def put(store: ObjectStore, data: bytes) -> str:
    key = f"dicom/test/{uuid.uuid4().hex}"
    store.put_bytes(BUCKETS["objects_bucket"], key, data, "application/dicom")
    return key


def seeded_bytes() -> bytes:
    out = io.BytesIO()
    seeded().save_as(out, enforce_file_format=True)
    return out.getvalue()


def release(prefix: str, keys: list[str]) -> ReleaseFiles:
    manifest = f"{prefix}/manifest.json"
    return ReleaseFiles(files={("public", manifest): b"{}"}, manifest_key=manifest,
                        copies=[("public", key, f"{prefix}/images/{i}.dcm") for i, key in enumerate(keys)])


def listed(store: ObjectStore, prefix: str) -> list[str]:
    return [o.object_name for o in store.client.list_objects(BUCKETS["public_bucket"], prefix=prefix, recursive=True)]


def test_a_release_with_an_object_that_carries_identifiers_is_refused_and_writes_nothing(store):
    scrubbed, _ = parse_instance("ok.dcm", seeded_bytes(), scrub=True, patient_id="PSEUDO-1")
    good, raw = put(store, scrubbed.data), put(store, seeded_bytes())  # raw: stored before the profile
    prefix = f"rel-{uuid.uuid4().hex[:8]}"
    with pytest.raises(NotDeidentified, match=rf"1 of 2 DICOM objects are not de-identified.*{raw}.*AccessionNumber"):
        publish_release(store, SimpleNamespace(**BUCKETS), release(prefix, [good, raw]))
    assert listed(store, prefix) == []  # not one object, not the manifest


def test_a_released_object_holds_nothing_the_profile_removes(store):
    scrubbed, removed = parse_instance("ok.dcm", seeded_bytes(), scrub=True, patient_id="PSEUDO-1")
    assert {"AccessionNumber", "StationName", "DeviceSerialNumber", "RequestAttributesSequence"} <= set(removed)
    prefix = f"rel-{uuid.uuid4().hex[:8]}"
    publish_release(store, SimpleNamespace(**BUCKETS), release(prefix, [put(store, scrubbed.data)]))
    assert sorted(listed(store, prefix)) == [f"{prefix}/images/0.dcm", f"{prefix}/manifest.json"]
    copy = pydicom.dcmread(io.BytesIO(store.get_bytes(BUCKETS["public_bucket"], f"{prefix}/images/0.dcm")))
    assert deid.violations(copy) == []
    assert {e.keyword for e in copy.iterall()}.isdisjoint(deid.REMOVE)
    assert not [e for e in copy.iterall() if e.tag.is_private]
    assert copy.PatientID == "PSEUDO-1" and copy.AccessionNumber == ""
