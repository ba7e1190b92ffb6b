"""Identifying data in DICOM headers: found, and scrubbed on request."""

from __future__ import annotations

import pydicom
from pydicom.dataset import Dataset

from services.gateway.deid import identifying_attributes, scrub


def a_dataset(**attrs) -> Dataset:
    ds = Dataset()
    ds.PatientID = "ANON-1"
    ds.StudyID = "CXR-000001"
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def test_a_de_identified_header_has_nothing_to_report():
    assert identifying_attributes(a_dataset(PatientIdentityRemoved="YES")) == []


def test_names_birth_dates_institutions_and_private_tags_are_identifying():
    ds = a_dataset(PatientName="Doe^Jane", PatientBirthDate="19700101", InstitutionName="General Hospital")
    ds.add_new(0x00091001, "LO", "vendor secret")
    assert identifying_attributes(ds) == ["PatientName", "PatientBirthDate", "InstitutionName", "private tags"]


def test_an_empty_value_is_not_identifying():
    assert identifying_attributes(a_dataset(PatientName="")) == []


def test_scrub_removes_them_and_records_the_method():
    ds = a_dataset(PatientName="Doe^Jane", ReferringPhysicianName="Dr^Who")
    ds.add_new(0x00091001, "LO", "vendor secret")
    removed = scrub(ds)
    assert removed == ["PatientName", "ReferringPhysicianName", "private tags"]
    assert identifying_attributes(ds) == []
    assert ds.PatientIdentityRemoved == "YES" and "PS3.15" in ds.DeidentificationMethod
    assert ds.PatientID == "ANON-1"  # the pseudonymous id stays: studies link through it
    assert isinstance(ds, pydicom.Dataset)
