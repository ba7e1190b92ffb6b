"""Identifying data in DICOM headers: detect it, or scrub it (a subset of the PS3.15 Annex E
Basic Application Level Confidentiality Profile: the attributes a research archive most often
leaks). Rejecting is the default; scrubbing is an explicit choice of the curator."""

from __future__ import annotations

import pydicom

# Attributes whose presence (with a non-empty value) means the object identifies a person.
IDENTIFYING = (
    "PatientName", "PatientBirthDate", "PatientAddress", "PatientTelephoneNumbers", "OtherPatientIDs",
    "OtherPatientNames", "PatientMotherBirthName", "MedicalRecordLocator", "ReferringPhysicianName",
    "PerformingPhysicianName", "OperatorsName", "InstitutionName", "InstitutionAddress",
    "AccessionNumber", "PhysiciansOfRecord", "RequestingPhysician", "EthnicGroup", "MilitaryRank",
    "BranchOfService", "PatientInsurancePlanCodeSequence", "IssuerOfPatientID", "PatientBirthName",
)


def identifying_attributes(ds: pydicom.Dataset) -> list[str]:
    """Names of identifying attributes that carry a value."""
    found = [kw for kw in IDENTIFYING if kw in ds and str(ds.data_element(kw).value or "").strip()]
    if any(elem.tag.is_private for elem in ds):
        found.append("private tags")
    return found


def scrub(ds: pydicom.Dataset) -> list[str]:
    """Remove identifying attributes and private tags in place; returns what was removed."""
    removed = identifying_attributes(ds)
    for kw in IDENTIFYING:
        if kw in ds:
            delattr(ds, kw)
    ds.remove_private_tags()
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "RadCurate: PS3.15 E basic profile subset"
    return removed
