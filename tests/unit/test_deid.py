"""DICOM de-identification: the PS3.15 Basic Profile (services.common.deid) on a header seeded with
what raw modality exports carry, UIDs replaced consistently per project, BurnedInAnnotation refused."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from services.common import deid
from services.gateway.ingest import IngestError, parse_instance

SEEDED = {
    "PatientName": "DOE^JANE", "PatientID": "MRN-4471902", "PatientBirthDate": "19700101",
    "PatientAge": "054Y", "PatientSex": "F", "PatientAddress": "12 Elm Street, Springfield",
    "OtherPatientIDs": "MRN9912", "StudyID": "S-8812", "AccessionNumber": "A77120913",
    "StationName": "CR-ROOM-3", "DeviceSerialNumber": "SN-0098123", "InstitutionName": "General Hospital",
    "ReferringPhysicianName": "HOUSE^GREGORY", "OperatorsName": "TECH^TOM",
    "ImageComments": "pt Jane Doe, call 617-555-0134", "PatientComments": "allergic to iodine",
    "StudyComments": "follow-up of 2019 scan", "StudyDate": "20190314", "StudyTime": "101500",
    "SeriesDescription": "CHEST PA Dr. Smith", "StudyDescription": "XR CHEST 1 VIEW",
}


def seeded(path: str = "emri_small.dcm") -> Dataset:
    """A real test file carrying every identifier of SEEDED, private tags at the top level and
    inside a sequence, and a RequestAttributesSequence."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(get_testdata_file(path, download=False))
    for keyword, value in SEEDED.items():
        setattr(ds, keyword, value)
    ds.BurnedInAnnotation = "NO"
    ds.add_new(0x00091010, "LO", "vendor private at top level")
    request = Dataset()
    request.RequestedProcedureID = "RP-1"
    request.ScheduledProcedureStepID = "SPS-1"
    request.add_new(0x00191001, "LO", "private inside a sequence")
    ds.RequestAttributesSequence = Sequence([request])
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    item.ReferencedSOPInstanceUID = "1.2.3.4.5.6.7"
    item.add_new(0x00291020, "LO", "private in a referenced image item")
    ds.ReferencedImageSequence = Sequence([item])
    return ds


def all_private(ds: Dataset) -> list:
    found = []
    for elem in ds.iterall():
        if elem.tag.is_private:
            found.append(elem.tag)
    return found


def test_the_profile_tables_name_real_attributes():
    unknown = [kw for kw in deid.REMOVE | deid.EMPTY | deid.CLEANED if tag_for_keyword(kw) is None]
    assert unknown == []


def test_a_seeded_header_is_refused_by_the_check():
    found = deid.violations(seeded())
    for keyword in ("PatientName", "PatientBirthDate", "AccessionNumber", "StationName", "DeviceSerialNumber",
                    "ImageComments", "RequestAttributesSequence", "PatientAge", "PatientSex"):
        assert keyword in found
    assert any("private (0019,1001)" in f for f in found)  # inside RequestAttributesSequence
    assert any("private (0029,1020)" in f for f in found)  # inside ReferencedImageSequence
    assert "SeriesDescription (identifier in text)" in found


def test_scrub_leaves_nothing_the_profile_removes():
    ds = seeded()
    original_study_uid, original_date = str(ds.StudyInstanceUID), str(ds.StudyDate)
    deid.scrub(ds, secret="project-a", patient_id="PSEUDO-7")
    assert deid.violations(ds) == []
    present = {elem.keyword for elem in ds.iterall()}
    assert present.isdisjoint(deid.REMOVE)
    assert all(ds[keyword].value in ("", None) for keyword in deid.EMPTY if keyword in ds)  # Z: kept, empty
    assert all_private(ds) == []
    assert ds.PatientID == ds.PatientName == "PSEUDO-7"  # the record number is gone, the pseudonym links studies
    assert ds.AccessionNumber == "" and ds.StudyID == ""
    assert ds.StudyDate != original_date and len(ds.StudyDate) == 8  # shifted, still a date
    assert str(ds.StudyInstanceUID) != original_study_uid
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert "Smith" not in ds.SeriesDescription and ds.SeriesDescription.startswith("CHEST PA")  # cleaned, kept
    assert ds.PatientIdentityRemoved == "YES" and ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert [c.CodeValue for c in ds.DeidentificationMethodCodeSequence] == ["113100", "113105", "113107"]
    flat = repr(ds)
    for value in ("DOE^JANE", "MRN-4471902", "A77120913", "CR-ROOM-3", "SN-0098123", "617-555-0134",
                  "HOUSE^GREGORY", "General Hospital", "RP-1"):
        assert value not in flat


def test_uids_are_replaced_consistently_within_a_project_and_differently_across():
    a1, a2, b = seeded(), seeded(), seeded()
    for ds, secret in ((a1, "project-a"), (a2, "project-a"), (b, "project-b")):
        deid.scrub(ds, secret=secret, patient_id="P")
    assert a1.StudyInstanceUID == a2.StudyInstanceUID and a1.SOPInstanceUID == a2.SOPInstanceUID
    assert a1.StudyDate == a2.StudyDate  # one date shift per project: intervals between studies kept
    assert a1.StudyInstanceUID != b.StudyInstanceUID and a1.SOPInstanceUID != b.SOPInstanceUID
    assert a1.ReferencedImageSequence[0].ReferencedSOPInstanceUID != "1.2.3.4.5.6.7"
    assert a1.SOPClassUID == seeded().SOPClassUID  # class UIDs are not identifying: kept
    assert all(len(str(uid)) <= 64 for uid in (a1.StudyInstanceUID, a1.SeriesInstanceUID, a1.SOPInstanceUID))


def test_burned_in_annotation_is_refused_unless_overridden():
    ds = seeded()
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(deid.BurnedInAnnotation):
        deid.scrub(ds, secret="s", patient_id="P")
    assert "BurnedInAnnotation YES" in deid.violations(ds)
    deid.scrub(ds, secret="s", patient_id="P", allow_burned_in=True)
    assert deid.violations(ds, allow_burned_in=True) == []


def test_scrub_without_a_project_secret_is_refused():
    with pytest.raises(deid.DeidError, match="RADCURATE_DEID_SECRET"):
        deid.scrub(seeded(), secret="", patient_id="P")


def test_a_pseudonymous_name_equal_to_the_id_passes_and_a_real_one_does_not():
    ds = Dataset()
    ds.PatientID = ds.PatientName = "ANON-1"
    assert deid.violations(ds) == []
    ds.PatientName = "DOE^JANE"
    assert deid.violations(ds) == ["PatientName"]


def seeded_file(tmp_path, **attrs) -> Path:
    ds = seeded()
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    ds.save_as(tmp_path / "seeded.dcm", enforce_file_format=True)
    return tmp_path / "seeded.dcm"


def test_ingest_refuses_a_seeded_object_without_scrub_and_stores_a_conforming_one_with_it(tmp_path):
    path = seeded_file(tmp_path)
    with pytest.raises(IngestError,
                       match=r"carries identifying data \(AccessionNumber, .*\) that the PS3.15 Basic Profile removes"):
        parse_instance("seeded.dcm", path, scrub=False)
    parsed, removed = parse_instance("seeded.dcm", path, scrub=True, patient_id="PSEUDO-9")
    stored = pydicom.dcmread(io.BytesIO(parsed.data))
    assert deid.violations(stored) == [] and stored.PatientID == "PSEUDO-9"
    assert parsed.obj.sop_instance_uid == stored.SOPInstanceUID != seeded().SOPInstanceUID  # recorded as stored
    assert "StationName" in removed and "DeviceSerialNumber" in removed


def test_ingest_refuses_burned_in_annotation_unless_the_curator_overrides(tmp_path):
    path = seeded_file(tmp_path, BurnedInAnnotation="YES")
    for scrub in (False, True):
        with pytest.raises(IngestError, match="BurnedInAnnotation is YES"):
            parse_instance("seeded.dcm", path, scrub=scrub, patient_id="P")
    parsed, _ = parse_instance("seeded.dcm", path, scrub=True, patient_id="P", allow_burned_in=True)
    assert parsed.obj.sop_instance_uid


def raw_read(ds: Dataset, implicit: bool) -> Dataset:
    """`ds` written and read back, its elements still raw (as ingest reads an upload)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if not getattr(ds, "file_meta", None):  # some test files are bare datasets
        ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID") or "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID") or "1.2.3.4"
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(out.getvalue()))


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("name", ["seeded", "nested_priv_SQ.dcm", "priv_SQ.dcm", "rtplan.dcm", "rtstruct.dcm",
                                  "waveform_ecg.dcm", "MR_small_implicit.dcm", "OBXXXX1A.dcm", "CT_small.dcm"])
def test_the_check_reads_only_candidate_elements_and_finds_what_a_full_walk_finds(name, implicit, monkeypatch):
    """violations() decodes only the elements whose tag it could object to (issue 15 §2: the
    full walk was ~40% of parse_instance); what it finds is what walking every element finds."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "seeded":
            ds = seeded()
            ds.add_new(0x60003000, "OW", b"\0" * 8)  # an overlay
        else:
            ds = pydicom.dcmread(get_testdata_file(name, download=False), force=True)
        ds = raw_read(ds, implicit)
        monkeypatch.setattr(deid, "_SEQUENCE_FINDINGS", {})
        found = deid.violations(ds)
        again = deid.violations(raw_read(ds, implicit))  # its sequences' findings remembered, not decoded
        with monkeypatch.context() as m:
            m.setattr(deid, "_SEQUENCE_FINDINGS", {})  # nothing remembered: nothing to skip
            m.setattr(deid, "_walk_candidates", lambda ds, path="", skip=(): deid._walk(ds, path))
            everything = deid.violations(raw_read(ds, implicit))
    assert found == everything == again
    if name == "seeded":
        assert {"private (0009,1010) at (0009,1010)", "overlay/curve (6000,3000)", "PatientAddress",
                "RequestAttributesSequence"} <= set(found)


def test_a_sequence_seen_before_is_not_decoded_again_and_what_decides_its_findings_is_in_the_key(monkeypatch):
    """The findings inside a top-level sequence are remembered by its bytes as read (issue 15 §2:
    decoding the DeidentificationMethodCodeSequence was a fifth of parsing an object), but never
    those of one holding a PatientName (it is compared with the root's PatientID)."""
    monkeypatch.setattr(deid, "_SEQUENCE_FINDINGS", {})
    ds = seeded()
    item = Dataset()
    item.PatientName, item.CodeValue = "Doe^Jane", "113100"
    item.add_new(0x00091010, "LO", "private text")
    ds.DeidentificationMethodCodeSequence = [item]
    ds.PatientID = "P-1"
    first = deid.violations(raw_read(ds, False))
    nested = ["DeidentificationMethodCodeSequence[0].PatientName",
              "private (0009,1010) at DeidentificationMethodCodeSequence[0].(0009,1010)"]
    assert set(nested) <= set(first)
    # The nested name is the pseudonymous id when the root's PatientID says so: not a finding.
    ds.PatientID = "Doe^Jane"
    seen = raw_read(ds, False)
    assert nested[0] not in deid.violations(seen) and nested[1] in deid.violations(seen)
    assert not isinstance(seen.get_item(0x00120064), pydicom.dataelem.RawDataElement)  # decoded: it holds a name
    # Without the name, the sequence is remembered: same findings, never decoded again.
    del ds.DeidentificationMethodCodeSequence[0].PatientName
    first = deid.violations(raw_read(ds, False))
    assert [f for f in first if "DeidentificationMethodCodeSequence" in f] == nested[1:]
    seen = raw_read(ds, False)
    assert deid.violations(seen) == first
    assert isinstance(seen.get_item(0x00120064), pydicom.dataelem.RawDataElement)  # never decoded
    # Other bytes, other findings: the private element gone.
    del ds.DeidentificationMethodCodeSequence[0][0x00091010]
    assert [f for f in deid.violations(raw_read(ds, False)) if "DeidentificationMethodCodeSequence" in f] == []
