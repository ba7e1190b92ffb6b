"""Issue 11 item 16: study ids and DICOM UIDs cannot carry a path, and `radcurate export` never
writes outside its folder, whatever a manifest says."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from radcurate.export_cmd import UnsafePath, export_release, inside
from services.common.identifiers import is_dicom_uid, is_study_id
from services.common.objectstore import sha256_hex


@pytest.mark.parametrize("value", ["S000123", "4003253", "HTTP-X1", "run-abc_1.2", "a" * 128])
def test_ordinary_study_ids_are_accepted(value):
    assert is_study_id(value)


@pytest.mark.parametrize("value", ["", "../etc", "a/b", "a\\b", ".hidden", "a..b", "/abs", "x y", "a\x00b",
                                   "é", "a" * 129, "-rf"])
def test_study_ids_that_could_be_a_path_or_an_option_are_refused(value):
    assert not is_study_id(value)


@pytest.mark.parametrize("value,ok", [("1.2.840.10008.5.1.4.1.1.2", True), ("0.1", True), ("1.02", False),
                                      ("1..2", False), ("../1", False), ("1.2/3", False), ("1." + "1" * 63, False)])
def test_dicom_uids_are_digits_and_dots(value, ok):
    assert is_dicom_uid(value) is ok


def test_inside_refuses_absolute_and_climbing_paths(tmp_path: Path):
    assert inside(tmp_path, "images/S1/1.2/3.dcm") == (tmp_path / "images/S1/1.2/3.dcm").resolve()
    for bad in ("/etc/passwd", "../outside", "images/../../outside", ""):
        with pytest.raises(UnsafePath):
            inside(tmp_path, bad)


class DictStore:
    """Bytes by key: the part of ObjectStore export_release uses (a unit test of pure logic). As
    the real store, a GET hands the body on in chunks (read_into), and get_bytes joins them."""

    CHUNK = 64 * 1024

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def read_into(self, bucket: str, key: str, sink: Callable[[bytes], object]) -> str:
        data = self.objects[key]
        for at in range(0, len(data), self.CHUNK):
            sink(data[at:at + self.CHUNK])
        return "etag"

    def get_bytes(self, bucket: str, key: str) -> bytes:
        pieces: list[bytes] = []
        self.read_into(bucket, key, pieces.append)
        return b"".join(pieces)


def test_an_export_whose_manifest_points_outside_the_folder_writes_nothing_there(tmp_path: Path):
    evil = b"owned"
    manifest = {"files": {"releases/r1/../../../../escaped.txt": sha256_hex(evil)}, "released": {"objects": []}}
    manifest_bytes = json.dumps(manifest).encode()
    store = DictStore({"releases/r1/manifest.json": manifest_bytes, "releases/r1/../../../../escaped.txt": evil})
    release = {"manifest_key": "releases/r1/manifest.json", "manifest_sha256": sha256_hex(manifest_bytes)}
    target = tmp_path / "deep" / "er" / "out"
    with pytest.raises(UnsafePath):
        export_release(store, "public", release, target)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not target.exists()


def test_patient_id_spellings_from_real_exports_normalise_to_one_id():
    from services.common.identifiers import normalise_patient_id, patient_key

    same = ["PT-0042", " pt-0042 ", "PT-0042\t", "ＰＴ－００４２", "Pt - 0042"]
    assert {normalise_patient_id(v) for v in same} == {"pt-0042"}
    assert normalise_patient_id("0012345") == normalise_patient_id("12345") == "12345"
    assert normalise_patient_id("000") == "0"
    assert normalise_patient_id("PT-1") != normalise_patient_id("PT1")  # punctuation is kept
    assert normalise_patient_id("A0012") != normalise_patient_id("A12")  # zeros only of an all-digit id
    assert patient_key("0012345", "s") == patient_key("12345 ", "s") != patient_key("12345", "t")
    assert patient_key("   ", "s") is None and "12345" not in (patient_key("12345", "s") or "")
