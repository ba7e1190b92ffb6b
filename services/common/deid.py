"""DICOM de-identification: the PS3.15 Annex E Basic Application Level Confidentiality Profile
with the Clean Descriptors and Retain Longitudinal Temporal Information with Modified Dates
options, and the check that an object conforms (run at ingest, and again on every object
before a release writes it to a bucket).

What `scrub` does, in order:
  1. refuses an object whose BurnedInAnnotation is YES (text in the pixels: no header edit can
     remove it) unless the curator overrides;
  2. removes (action X) the attributes of Table E.1-1 in REMOVE, every private element and the
     overlay/curve groups (60xx, 50xx), at any depth (inside sequences too);
  3. empties (action Z) the attributes in EMPTY;
  4. cleans the descriptors in CLEANED (Clean Descriptors option: identifiers in the text masked
     by services.common.phi);
  5. hands the rest to dicognito (seeded with the project's secret): every instance UID replaced
     by one derived from the secret (same UID in, same UID out within a project; another project
     with another secret gets other UIDs), every date and time shifted by one offset derived from
     the secret (intervals between studies kept: the Modified Dates option), remaining person
     names and IDs replaced;
  6. sets PatientID and PatientName to the curator's pseudonymous patient id, and records the
     method: PatientIdentityRemoved YES, DeidentificationMethod(CodeSequence), and
     LongitudinalTemporalInformationModified MODIFIED.
"""

from __future__ import annotations

import hashlib
from collections.abc import Container
from typing import Any

import pydicom
from dicognito.anonymizer import Anonymizer
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from services.common import phi

METHOD = "PS3.15 Basic Profile; Clean Descriptors; Modified Dates"  # LO: at most 64 characters
# (code value, meaning) from DICOM CID 7050 De-identification Method
METHOD_CODES = (("113100", "Basic Application Confidentiality Profile"),
                ("113105", "Clean Descriptors Option"),
                ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"))
OPTIONS = [meaning for _, meaning in METHOD_CODES]

# Table E.1-1, action X (or X/Z, X/D, X/Z/D, X/Z/U*: we choose removal) for the attributes this
# profile lists that an image object can carry; UIDs (action U) and dates are dicognito's.
REMOVE = frozenset({
    "AcquisitionComments", "AcquisitionContextSequence", "AcquisitionDeviceProcessingDescription",
    "AcquisitionProtocolDescription", "ActualHumanPerformersSequence", "AdditionalPatientHistory",
    "AdmissionID", "AdmittingDiagnosesCodeSequence", "AdmittingDiagnosesDescription", "Allergies",
    "AuthorObserverSequence", "BranchOfService", "CassetteID", "CommentsOnThePerformedProcedureStep",
    "ConfidentialityConstraintOnPatientDataDescription", "ContentCreatorIdentificationCodeSequence",
    "ContentSequence", "ContributionDescription", "CountryOfResidence", "CurrentPatientLocation",
    "CustodialOrganizationSequence", "DataSetTrailingPadding", "DerivationDescription", "DetectorID",
    "DeviceSerialNumber", "DigitalSignaturesSequence", "DischargeDiagnosisDescription", "DistributionAddress",
    "DistributionName", "EthnicGroup", "FrameComments", "GantryID", "GeneratorID", "HumanPerformerName",
    "HumanPerformerOrganization", "IconImageSequence", "IdentifyingComments", "ImageComments",
    "ImagePresentationComments", "ImagingServiceRequestComments", "Impressions", "InstitutionAddress",
    "InstitutionalDepartmentName", "InstitutionName", "InstitutionCodeSequence", "InsurancePlanIdentification",
    "IntendedRecipientsOfResultsIdentificationSequence", "InterpretationApproverSequence",
    "InterpretationAuthor", "InterpretationDiagnosisDescription", "InterpretationIDIssuer",
    "InterpretationRecorder", "InterpretationText", "InterpretationTranscriber", "IssuerOfAdmissionID",
    "IssuerOfPatientID", "IssuerOfServiceEpisodeID", "MedicalAlerts", "MedicalRecordLocator", "MilitaryRank",
    "ModifiedAttributesSequence", "ModifyingDeviceID", "ModifyingDeviceManufacturer",
    "NamesOfIntendedRecipientsOfResults", "Occupation", "OperatorIdentificationSequence", "OperatorsName",
    "OriginalAttributesSequence", "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames",
    "ParticipantSequence", "PatientAddress", "PatientAge", "PatientBirthName", "PatientBirthTime",
    "PatientComments", "PatientInstitutionResidence", "PatientInsurancePlanCodeSequence",
    "PatientMotherBirthName", "PatientPrimaryLanguageCodeSequence",
    "PatientPrimaryLanguageModifierCodeSequence", "PatientReligiousPreference", "PatientSexNeutered",
    "PatientSize", "PatientState", "PatientTelecomInformation", "PatientTelephoneNumbers",
    "PatientTransportArrangements", "PatientWeight", "PerformedLocation", "PerformedProcedureStepDescription",
    "PerformedProcedureStepID", "PerformedStationAETitle", "PerformedStationGeographicLocationCodeSequence",
    "PerformedStationName", "PerformedStationNameCodeSequence", "PerformingPhysicianIdentificationSequence",
    "PerformingPhysicianName", "PersonAddress", "PersonTelephoneNumbers", "PhysicianApprovingInterpretation",
    "PhysiciansOfRecord", "PhysiciansOfRecordIdentificationSequence", "PhysiciansReadingStudyIdentificationSequence",
    "NameOfPhysiciansReadingStudy", "PlateID", "PreMedication", "PregnancyStatus", "ReasonForStudy",
    "ReasonForTheRequestedProcedure", "ReferencedDigitalSignatureSequence", "ReferencedPatientAliasSequence",
    "ReferencedPatientPhotoSequence", "ReferencedPatientSequence", "ReferringPhysicianAddress",
    "ReferringPhysicianIdentificationSequence", "ReferringPhysicianTelephoneNumbers", "RegionOfResidence",
    "RequestAttributesSequence", "RequestedContrastAgent", "RequestedProcedureComments",
    "RequestedProcedureDescription", "RequestedProcedureID", "RequestedProcedureLocation", "RequestingPhysician",
    "RequestingService", "ResponsibleOrganization", "ResponsiblePerson", "ResultsComments",
    "ResultsDistributionListSequence", "ResultsIDIssuer", "ReviewerName", "ScheduledHumanPerformersSequence",
    "ScheduledPatientInstitutionResidence", "ScheduledPerformingPhysicianIdentificationSequence",
    "ScheduledPerformingPhysicianName", "ScheduledProcedureStepDescription", "ScheduledProcedureStepLocation",
    "ScheduledStationAETitle", "ScheduledStationGeographicLocationCodeSequence", "ScheduledStationName",
    "ScheduledStationNameCodeSequence", "ScheduledStudyLocation", "ScheduledStudyLocationAETitle",
    "ServiceEpisodeDescription", "ServiceEpisodeID", "SmokingStatus", "SpecialNeeds", "StationName",
    "StudyComments", "StudyIDIssuer", "TextComments", "TextString", "TopicAuthor", "TopicKeywords",
    "TopicSubject", "TopicTitle", "VerifyingObserverIdentificationCodeSequence", "VisitComments",
    "PersonName", "ContentCreatorName", "VerifyingObserverName", "VerifyingOrganization",
    "OrderEnteredBy", "OrderEntererLocation",
    "OrderCallbackPhoneNumber", "PlacerOrderNumberImagingServiceRequest", "FillerOrderNumberImagingServiceRequest",
})
# Action Z: kept (Type 2 attributes: the IOD needs them), with a zero-length value. Z also allows
# a dummy value, which a check cannot tell from a real one: StudyID may carry one (de-identified
# archives put the pseudonymous study id there); the others are refused when they carry a value.
EMPTY = frozenset({"AccessionNumber", "StudyID", "PatientBirthDate", "PatientSex", "ReferringPhysicianName"})
_REFUSED_WHEN_SET = EMPTY - {"StudyID"}
# Clean Descriptors option: kept, with identifiers in the text masked (reviewers and benchmark
# users need "PA", "LATERAL", "T2 SAG").
CLEANED = frozenset({"SeriesDescription", "StudyDescription", "ProtocolName"})
PSEUDONYMISED = ("PatientID", "PatientName")
# The keywords violations() can object to (StudyID, emptied or not, never is: it is not decoded).
_CHECKED = REMOVE | _REFUSED_WHEN_SET | CLEANED | {"PatientName"}
# ... as tags: a set lookup per element instead of a dictionary keyword lookup (the walk runs on
# every header element of every ingested object).
_CHECKED_TAGS = frozenset(tag for kw in _CHECKED if (tag := tag_for_keyword(kw)) is not None)
_REPEATING_GROUPS = ((0x5000, 0x50FF), (0x6000, 0x60FF))  # curves, overlays (overlay text, graphics)
_REPEATING_HIGH_BYTES = (0x50, 0x60)  # the groups above, told by their tag's first byte


class DeidSettings(BaseSettings):
    """The project's de-identification secret (RADCURATE_DEID_SECRET): it seeds UID replacement
    and the date shift, so it must stay the same for a project's lifetime, differ between
    projects, and never be released (with it, replaced UIDs can be matched to originals)."""

    model_config = SettingsConfigDict(env_prefix="RADCURATE_DEID_", extra="ignore")

    secret: SecretStr = SecretStr("")


class DeidError(ValueError):
    """The object cannot be de-identified as asked (the message says why)."""


class BurnedInAnnotation(DeidError):
    """BurnedInAnnotation is YES and no curator has overridden it."""


def _is_repeating(tag: Any) -> bool:
    return tag >> 24 in _REPEATING_HIGH_BYTES  # group 50xx or 60xx


def _has_value(elem: Any) -> bool:
    if elem.VR == "SQ":
        return len(elem.value or ()) > 0
    return elem.value not in (None, "", b"") and str(elem.value).strip() != ""


def _walk(ds: Dataset, path: str = "") -> Any:
    """(path, dataset, element) for every element at every depth."""
    for elem in list(ds):
        where = f"{path}{elem.keyword or elem.tag}"
        yield where, ds, elem
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value or ()):
                yield from _walk(item, f"{where}[{i}].")


def _walk_candidates(ds: Dataset, path: str = "", skip: Container[int] = ()) -> Any:
    """`_walk`, less the elements `violations` cannot object to, told from their tag alone (not
    private, not an overlay or curve, not a keyword it checks, not a sequence to descend into):
    those are never decoded from the file's bytes, and they are most of a header. A top-level
    tag in `skip` is yielded undecoded, as (path, None, tag), and not descended into."""
    for tag in list(ds.keys()):
        if tag in skip:
            yield f"{path}{keyword_for_tag(tag) or tag}", None, tag
            continue
        if not (tag >> 16 & 1 or tag >> 24 in _REPEATING_HIGH_BYTES or tag in _CHECKED_TAGS):  # private, 50xx/60xx
            vr = ds.get_item(tag).VR
            if vr in (None, "UN") and keyword_for_tag(tag):  # implicit VR, or UN read as its dictionary VR
                vr = dictionary_VR(tag)
            if vr != "SQ":
                continue
        elem = ds[tag]
        where = f"{path}{elem.keyword or elem.tag}"
        yield where, ds, elem
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value or ()):
                yield from _walk_candidates(item, f"{where}[{i}].")


# What `violations` found in a top-level sequence, by everything that decides it: the sequence's
# tag and bytes as read (not yet decoded), how the file encodes them, and the root's character set.
# A sequence holding a PatientName is never remembered (the name is compared with the root's
# PatientID, which differs from object to object). Decoding a sequence
# is pydicom's dearest read (~0.2 ms for the three-item DeidentificationMethodCodeSequence that
# every de-identified object carries: a fifth of parsing a chest radiograph at ingest), and an
# archive repeats the same bytes in every object.
_SEQUENCE_FINDINGS: dict[tuple[Any, ...], list[str]] = {}
_SEQUENCE_FINDINGS_MAX = 1024  # entries; the table starts again when full
_SEQUENCE_BYTES_MAX = 4096  # a longer sequence is decoded every time (it rarely repeats)


def _sequence_key(ds: Dataset, tag: int, context: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The key of a top-level sequence still undecoded and short enough to remember, else None."""
    raw = ds.get_item(tag)
    if isinstance(raw, pydicom.dataelem.RawDataElement) and raw.VR == "SQ" and isinstance(raw.value, bytes) \
            and len(raw.value) <= _SEQUENCE_BYTES_MAX:
        return (tag, raw.value, *context)
    return None


def _remember(key: tuple[Any, ...], start: int, found: list[str]) -> None:
    """Keep what a sequence held (`found[start:]`: the findings since it was reached)."""
    if len(_SEQUENCE_FINDINGS) >= _SEQUENCE_FINDINGS_MAX:
        _SEQUENCE_FINDINGS.clear()
    _SEQUENCE_FINDINGS[key] = found[start:]


def violations(ds: Dataset, *, allow_burned_in: bool = False) -> list[str]:
    """What in `ds` the profile would not let through, at any depth ('' list: conforms):
    an attribute it removes or empties still carrying a value, a private element, an overlay or
    curve, a descriptor with an identifier in it, and BurnedInAnnotation YES unless allowed."""
    context = (ds.is_little_endian, ds.is_implicit_VR, str(ds.get("SpecificCharacterSet", "")))
    keys = {tag: key for tag in list(ds.keys()) if (key := _sequence_key(ds, tag, context)) is not None}
    known = {tag: held for tag, key in keys.items() if (held := _SEQUENCE_FINDINGS.get(key)) is not None}
    found: list[str] = []
    learning: tuple[tuple[Any, ...], int] | None = None  # a remembered sequence being walked: its key, first finding
    for where, parent, elem in _walk_candidates(ds, skip=known):
        if (parent is ds or parent is None) and learning is not None:  # back at the top level: it is done
            _remember(*learning, found)
            learning = None
        if parent is None:  # a sequence seen before, undecoded: what it held then
            found += known[elem]
            continue
        if parent is ds and elem.tag in keys:
            learning = (keys[elem.tag], len(found))
        elif learning is not None and elem.keyword == "PatientName":
            learning = None  # what it finds depends on the root's PatientID: not remembered
        if elem.tag.is_private:
            found.append(f"private {elem.tag} at {where}")
        elif _is_repeating(elem.tag):
            found.append(f"overlay/curve {elem.tag}")
        elif elem.keyword in REMOVE and _has_value(elem):
            found.append(where)
        elif elem.keyword in _REFUSED_WHEN_SET and _has_value(elem):
            found.append(where)
        elif elem.keyword == "PatientName" and _has_value(elem) and str(elem.value) != str(ds.get("PatientID", "")):
            found.append(where)  # a name, unless it is the pseudonymous id
        elif elem.keyword in CLEANED and isinstance(elem.value, str) and phi.find(elem.value):
            found.append(f"{where} (identifier in text)")
    if learning is not None:
        _remember(*learning, found)
    if not allow_burned_in and str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        found.append("BurnedInAnnotation YES")
    return found


def project_seed(secret: str) -> str:
    """dicognito's seed: a digest of the secret (the secret itself never leaves this process)."""
    return hashlib.sha256(b"radcurate-deid\0" + secret.encode()).hexdigest()


def scrub(ds: Dataset, *, secret: str, patient_id: str, allow_burned_in: bool = False) -> list[str]:
    """De-identify `ds` in place (module docstring); returns what the profile removed, emptied or
    cleaned. Raises BurnedInAnnotation, or DeidError when no project secret is set."""
    if not secret:
        raise DeidError("de-identification needs the project's secret: set RADCURATE_DEID_SECRET")
    if not allow_burned_in and str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        raise BurnedInAnnotation("BurnedInAnnotation is YES (identifying text may be in the pixels): "
                                 "refused unless a curator overrides")
    found = violations(ds, allow_burned_in=True)
    for _, parent, elem in list(_walk(ds)):
        if elem.tag not in parent:
            continue  # inside a sequence already removed
        if elem.tag.is_private or _is_repeating(elem.tag) or elem.keyword in REMOVE:
            del parent[elem.tag]
        elif elem.keyword in EMPTY:
            elem.value = ""
        elif elem.keyword in CLEANED and isinstance(elem.value, str):
            elem.value = phi.mask(elem.value).text
    Anonymizer(seed=project_seed(secret)).anonymize(ds)
    for keyword in PSEUDONYMISED:
        setattr(ds, keyword, patient_id)
    for _, _, elem in _walk(ds):  # dicognito writes random IDs and names into what it finds; Z means empty
        if elem.keyword in EMPTY:
            elem.value = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = METHOD
    codes = []
    for value, meaning in METHOD_CODES:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = codes
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    return sorted(set(found))


def card_section() -> dict[str, Any]:
    """What a release's dataset card states about the de-identification of its images and text."""
    return {
        "standard": "DICOM PS3.15 Annex E", "profile": "Basic Application Level Confidentiality Profile",
        "options": list(OPTIONS), "method_codes": [code for code, _ in METHOD_CODES],
        "uids": "replaced; the same original UID gives the same UID within this project, another project's differ",
        "dates": "shifted by one offset per project: intervals between studies are kept",
        "patient_id": "pseudonymous (PatientID and PatientName carry the curator's pseudonym)",
        "descriptors": "SeriesDescription, StudyDescription, ProtocolName kept with identifiers masked",
        "burned_in_annotation": "objects marked YES are refused unless a curator overrides at ingest",
        "checked_before_release": "every DICOM object is read and checked against the profile before it is copied",
        "report_text": "not released; identifiers are masked before any language-model call",
    }


def check_bytes(fp: Any, *, allow_burned_in: bool = True) -> list[str]:
    """violations() of a stored DICOM file (a binary file object), read whole: private or
    overlay elements can follow the pixel data."""
    ds = pydicom.dcmread(fp, defer_size="1 KB")
    return violations(ds, allow_burned_in=allow_burned_in)
