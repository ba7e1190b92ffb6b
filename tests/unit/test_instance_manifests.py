"""Issue 11 item 1: long instance lists travel by reference (a manifest in the object store,
checked by sha256 and count), so an event's size does not grow with the study; short ones (issue
15: a chest radiograph's one or two instances) travel inline, so ingest stores nothing but the
DICOM; old events with the list inline still read (upcaster)."""

from __future__ import annotations

import json

import pydantic
import pytest
import urllib3.exceptions
from minio.error import S3Error

from services.common import manifests, outbox
from services.common.contracts import (
    DicomObject,
    FindingsExtracted,
    ModelProvenance,
    ObjectsManifest,
    ReportIngested,
    ReviewAssigned,
    parse_event,
)
from services.common.failures import PermanentError, is_transient
from services.common.objectstore import sha256_hex

PROV = ModelProvenance(backend="rules")


def instances(n: int, study: str = "S1") -> list[DicomObject]:
    """DICOM objects with realistic key and UID lengths (~450 B each as JSON)."""
    out = []
    for i in range(n):
        digest = sha256_hex(f"{study}-{i}".encode())
        out.append(DicomObject(object_key=f"dicom/sha256/{digest[:2]}/{digest}", sha256=digest,
                               sop_instance_uid=f"1.2.826.0.1.3680043.8.498.{10**20 + i}.{i}",
                               series_instance_uid=f"1.2.826.0.1.3680043.8.498.{10**20 + i // 200}",
                               series_description="Axial T2", instance_number=i % 200 + 1, modality="MR",
                               pixel_spacing=(0.6875, 0.6875)))
    return out


def report(manifest: ObjectsManifest, study: str = "S1") -> ReportIngested:
    return ReportIngested(study_id=study, patient_id="P1", protocol="lumbar-grading", study_instance_uid="1.2.3",
                          report_text="Mild L4-L5 stenosis.", objects_manifest=manifest)


class Store:
    """A stand-in for the object store's two calls (pure logic under test, not the store)."""

    def __init__(self, objects: dict[str, bytes] | None = None, error: BaseException | None = None) -> None:
        self.objects = dict(objects or {})
        self.error = error

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str = "") -> None:
        self.objects[key] = data

    def get_bytes(self, bucket: str, key: str) -> bytes:
        if self.error is not None:
            raise self.error
        return self.objects[key]


def s3_error(code: str) -> S3Error:
    return S3Error(None, code, f"{code} message", "/b/k", "req", "host")


def test_a_study_of_2400_instances_travels_in_an_event_of_constant_size():
    objects = instances(2400)
    inline = report(ObjectsManifest(count=2400, inline=objects))
    by_ref, data = manifests.describe("S1", objects)
    small = report(by_ref)
    # The inline list alone is over the outbox's limit; the reference is ~1 kB whatever the study.
    assert len(inline.model_dump_json()) > outbox.MAX_EVENT_BYTES
    assert len(small.model_dump_json()) < 1500
    huge = report(manifests.describe("S1", instances(20_000))[0])
    assert abs(len(huge.model_dump_json()) - len(small.model_dump_json())) <= 8  # the count's digits, a timestamp's
    digest = sha256_hex(data)
    assert (by_ref.count, by_ref.sha256, by_ref.key) == (2400, digest, f"manifests/S1/{digest}.json")


def test_a_manifest_written_then_read_gives_back_the_same_list():
    store = Store()
    objects = instances(300)
    ref = manifests.put_objects(store, "b", "S1", objects)  # type: ignore[arg-type]
    assert list(store.objects) == [ref.key]
    assert manifests.get_objects(store, "b", "S1", ref) == objects  # type: ignore[arg-type]
    assert manifests.describe("S1", list(objects))[0] == ref  # content-addressed: same list, same key


def test_a_tampered_manifest_is_a_permanent_error_that_says_what_differs():
    objects = instances(3)
    ref, data = manifests.describe("S1", objects)
    body = json.loads(data)
    body["objects"][1]["sha256"] = "0" * 64
    tampered = json.dumps(body).encode()
    with pytest.raises(manifests.ManifestMismatch, match=rf"sha256 of the stored bytes is {sha256_hex(tampered)}, "
                                                          rf"the event says {ref.sha256}") as caught:
        manifests.get_objects(Store({ref.key: tampered}), "b", "S1", ref)  # type: ignore[arg-type]
    assert isinstance(caught.value, PermanentError) and not is_transient(caught.value)


def test_bytes_that_match_the_checksum_must_still_be_this_studys_list_of_this_length():
    other, other_data = manifests.describe("S2", instances(3, "S2"))
    forged = ObjectsManifest(key=manifests.manifest_key("S1", other.sha256), sha256=other.sha256, count=3)
    with pytest.raises(manifests.ManifestMismatch, match="lists the instances of study 'S2'"):
        manifests.decode("S1", forged, other_data)
    ref, data = manifests.describe("S1", instances(3))
    with pytest.raises(manifests.ManifestMismatch, match="lists 3 instances, the event says 4"):
        manifests.decode("S1", ref.model_copy(update={"count": 4}), data)
    junk = b"not json"
    with pytest.raises(manifests.ManifestMismatch, match="not a manifest"):
        manifests.decode("S1", ObjectsManifest(key="k", sha256=sha256_hex(junk), count=0), junk)
    with pytest.raises(manifests.ManifestMismatch, match="is not study S1's manifest key"):
        manifests.get_objects(Store({"dicom/x": data}), "b", "S1",  # type: ignore[arg-type]
                              ref.model_copy(update={"key": "dicom/x"}))


def test_a_missing_manifest_is_a_dead_letter_but_a_store_that_does_not_answer_is_waited_out():
    ref, _ = manifests.describe("S1", instances(2))
    with pytest.raises(manifests.ManifestMissing, match="missing from bucket b; restore it and replay") as missing:
        manifests.get_objects(Store(error=s3_error("NoSuchKey")), "b", "S1", ref)  # type: ignore[arg-type]
    assert not is_transient(missing.value)
    for error in (s3_error("AccessDenied"), s3_error("SlowDown"), urllib3.exceptions.MaxRetryError(None, "/", None),
                  ConnectionRefusedError()):
        with pytest.raises(Exception) as caught:
            manifests.get_objects(Store(error=error), "b", "S1", ref)  # type: ignore[arg-type]
        assert is_transient(caught.value), error


def test_a_manifest_is_by_key_and_checksum_or_inline_never_half_of_each():
    one = instances(1)
    with pytest.raises(pydantic.ValidationError, match="sha256"):
        ObjectsManifest(key="manifests/S1/x.json", count=1)
    with pytest.raises(pydantic.ValidationError, match="not both"):
        ObjectsManifest(key="manifests/S1/x.json", sha256="a" * 64, count=1, inline=one)
    with pytest.raises(pydantic.ValidationError, match="comes with its key"):
        ObjectsManifest(sha256="a" * 64)
    with pytest.raises(pydantic.ValidationError, match="says count 2"):
        ObjectsManifest(count=2, inline=one)
    with pytest.raises(ValueError, match="fetch it"):
        manifests.inline_objects(manifests.describe("S1", one)[0])


def test_schema_2_events_with_the_list_inline_still_read_and_pass_it_on():
    objects = instances(5)
    old = {"event_type": "ReportIngested", "schema_version": 2, "study_id": "S1", "patient_id": "P1",
           "protocol": "lumbar-grading", "study_instance_uid": "1.2.3", "report_text": "Normal.",
           "objects": [o.model_dump(mode="json") for o in objects]}
    event = parse_event(old)
    assert isinstance(event, ReportIngested) and event.schema_version == 3
    assert event.objects_manifest == ObjectsManifest(count=5, inline=objects)
    assert manifests.get_objects(Store(), "b", "S1", event.objects_manifest) == objects  # type: ignore[arg-type]
    assert parse_event(event.model_dump(mode="json")) == event
    # A schema-1 review assignment (no protocol, no instances): upcast twice, an empty inline list.
    v1 = {"event_type": "ReviewAssigned", "schema_version": 1, "study_id": "S1", "run_id": "r", "patient_id": "P1",
          "readers": ["a"], "reason": "", "difficulty": "easy", "suggested": [], "taxonomy_version": "t",
          "extraction": PROV.model_dump(), "mapping": PROV.model_dump()}
    assigned = parse_event(v1)
    assert isinstance(assigned, ReviewAssigned) and assigned.objects_manifest == ObjectsManifest()
    passed_on = FindingsExtracted(study_id="S1", patient_id="P1", protocol="lumbar-grading", findings=[],
                                  provenance=PROV, objects_manifest=event.objects_manifest)
    assert manifests.inline_objects(passed_on.objects_manifest) == objects


def test_a_short_list_travels_inline_and_a_long_one_is_stored_once_and_referenced():
    store = Store()
    short = instances(2)
    ref = manifests.for_event(store, "b", "S1", short)  # type: ignore[arg-type]
    assert ref == ObjectsManifest(count=2, inline=short) and not ref.by_reference and store.objects == {}
    assert manifests.get_objects(Store(error=s3_error("AccessDenied")), "b", "S1", ref) == short  # type: ignore[arg-type]
    # The bound is on the list's canonical JSON: the longest list under it inline, one more by reference.
    fits = max(n for n in range(1, 100) if len(manifests.encode("S1", instances(n))) <= manifests.INLINE_MAX_BYTES)
    assert 10 <= fits < 40  # ~450 B per instance: a CXR study's few instances fit, a lumbar series does not
    assert manifests.plan("S1", instances(fits)) == (ObjectsManifest(count=fits, inline=instances(fits)), None)
    long = instances(fits + 1)
    ref = manifests.for_event(store, "b", "S1", long)  # type: ignore[arg-type]
    assert ref == manifests.describe("S1", long)[0] and ref.by_reference
    assert list(store.objects) == [ref.key] and store.objects[ref.key] == manifests.encode("S1", long)
    assert manifests.get_objects(store, "b", "S1", ref) == long  # type: ignore[arg-type]


def test_an_event_with_its_list_inline_stays_small_and_reads_back_whole_after_every_hop():
    objects = instances(2)
    event = report(manifests.plan("S1", objects)[0])
    assert event.objects_manifest.inline == objects and len(event.model_dump_json()) < outbox.MAX_EVENT_BYTES // 32
    decoded = parse_event(json.loads(event.model_dump_json()))
    assert isinstance(decoded, ReportIngested) and decoded == event
    passed_on = FindingsExtracted(study_id="S1", patient_id="P1", protocol="lumbar-grading", findings=[],
                                  provenance=PROV, objects_manifest=decoded.objects_manifest)
    assigned = ReviewAssigned(study_id="S1", protocol="lumbar-grading", run_id="r", patient_id="P1", readers=["a"],
                              reason="", difficulty="easy", suggested=[], taxonomy_version="t", extraction=PROV,
                              mapping=PROV, objects_manifest=passed_on.objects_manifest)
    again = parse_event(json.loads(assigned.model_dump_json()))
    assert isinstance(again, ReviewAssigned) and manifests.inline_objects(again.objects_manifest) == objects
