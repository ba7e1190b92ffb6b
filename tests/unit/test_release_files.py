"""A release laid out as files: deterministic, checksummed, holdout labels apart from the public set."""

from __future__ import annotations

import csv
import io
import json

from services.common.objectstore import sha256_hex
from services.common.protocols.kit.release import ReleaseStudy, build_release

LABELS = ("cardiomegaly", "pleural_effusion", "pneumothorax")


def study(sid: str, labels: set[str]) -> ReleaseStudy:
    obj = {"object_key": f"dicom/sha256/{sid}", "sha256": sha256_hex(sid.encode()), "sop_instance_uid": f"1.{sid}",
           "series_instance_uid": "1.2", "instance_number": 1}
    return ReleaseStudy(sid, f"P-{sid}", frozenset(labels), (obj,))


def build(**kw):
    released = [study("S2", {"cardiomegaly"}), study("S1", set())]
    holdout = [study("H1", {"pneumothorax", "pleural_effusion"})]
    return build_release("r1", protocol="cxr-label-verification", released=released, holdout=holdout,
                         label_ids=LABELS, card={"funnel": {"accepted": 3}}, **kw)


def test_the_same_inputs_give_the_same_bytes():
    a, b = build(), build()
    assert a.files == b.files and a.manifest_sha256 == b.manifest_sha256


def test_labels_csv_has_one_zero_or_one_column_per_label_sorted_by_study():
    rows = list(csv.reader(io.StringIO(build().files[("public", "releases/r1/labels.csv")].decode())))
    assert rows == [["study_id", *LABELS], ["S1", "0", "0", "0"], ["S2", "1", "0", "0"]]


def test_the_manifest_checksums_every_public_file_and_object():
    rf = build()
    manifest = json.loads(rf.files[("public", rf.manifest_key)])
    for key, digest in manifest["files"].items():
        assert sha256_hex(rf.files[("public", key)]) == digest
    assert [o["sha256"] for o in manifest["released"]["objects"]] == [sha256_hex(b"S1"), sha256_hex(b"S2")]
    assert sha256_hex(rf.files[("public", rf.manifest_key)]) == rf.manifest_sha256


def test_holdout_labels_and_images_only_go_to_the_holdout_bucket():
    rf = build()
    public = b"".join(v for (bucket, _), v in rf.files.items() if bucket == "public")
    assert b"pneumothorax,pleural" not in public
    assert b"H1,0,1,1" in rf.files[("holdout", "releases/r1/holdout/labels.csv")]
    manifest = json.loads(rf.files[("public", rf.manifest_key)])
    assert manifest["holdout"]["study_ids"] == ["H1"]  # ids are public: evaluators predict on them
    assert {bucket for bucket, _, dst in rf.copies if "H1" in dst} == {"holdout"}


def test_a_two_image_study_releases_both_images_frontal_and_lateral():
    frontal = {"object_key": "dicom/sha256/f", "sha256": sha256_hex(b"f"), "sop_instance_uid": "1.9.1",
               "series_instance_uid": "1.9.10", "instance_number": 1, "series_description": "CHEST PA"}
    lateral = {"object_key": "dicom/sha256/l", "sha256": sha256_hex(b"l"), "sop_instance_uid": "1.9.2",
               "series_instance_uid": "1.9.20", "instance_number": 1, "series_description": "CHEST LL"}
    two = ReleaseStudy("S9", "P-S9", frozenset({"cardiomegaly"}), (lateral, frontal))
    rf = build_release("r1", protocol="cxr-label-verification", released=[two], holdout=[], label_ids=LABELS,
                       card={})
    manifest = json.loads(rf.files[("public", rf.manifest_key)])
    listed = manifest["released"]["objects"]
    assert sorted(o["sop_instance_uid"] for o in listed) == ["1.9.1", "1.9.2"]
    assert {o["sha256"] for o in listed} == {frontal["sha256"], lateral["sha256"]}
    assert sorted(src for _, src, _ in rf.copies) == ["dicom/sha256/f", "dicom/sha256/l"]
    assert all(dst.startswith("releases/r1/images/S9/") for _, _, dst in rf.copies)
