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
import io
import mmap
import struct
from collections.abc import Container
from typing import Any

import pydicom
from dicognito.anonymizer import Anonymizer
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import RawDataElement, empty_value_for_VR
from pydicom.dataset import Dataset, FileDataset
from pydicom.filereader import data_element_generator
from pydicom.tag import BaseTag
from pydicom.uid import AllTransferSyntaxes
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR
from pydicom.values import convert_string

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


# What `_read_candidates` reads itself: the transfer syntaxes pydicom reads as explicit VR little
# endian without a rewrite (not implicit, big endian or deflated; the few private ones pydicom maps
# are left to it too); every VR pydicom knows (any other two bytes make it guess: left to it).
_EXPLICIT_LE = frozenset(str(ts).encode() for ts in AllTransferSyntaxes
                         if not ts.is_implicit_VR and ts.is_little_endian and not ts.is_deflated)
_KNOWN_VRS = frozenset(vr.encode() for vr in VR)
_LONG_VRS = frozenset(vr.encode() for vr in EXPLICIT_VR_LENGTH_32)  # 2 reserved bytes, 32-bit length
_HEADER = struct.Struct("<HH2sH")
_LENGTH32 = struct.Struct("<L")
# Top-level tags kept besides the candidates: what violations() reads by name (the root's
# character set, PatientID against PatientName, BurnedInAnnotation).
_ALSO_KEPT = frozenset({0x00080005, 0x00100020, 0x00280301})


def _read_candidates(buf: Any, fp: Any) -> FileDataset | None:
    """The top-level elements of a DICOM file that violations() can object to or needs, as
    pydicom's own dcmread would give them, without reading the rest into a Dataset; or None where
    this reader does not follow pydicom exactly (the caller then reads it with dcmread).

    violations() looks at an element only when its tag is private, an overlay or curve, a keyword
    it checks, or a sequence (or UN) it descends into, and otherwise reads SpecificCharacterSet,
    PatientID and BurnedInAnnotation: a Dataset holding only those, each the same RawDataElement
    (or, read by pydicom, DataElement) dcmread makes, gives the same findings in the same order
    (file order, as dcmread keeps). Most of a header is neither, and dcmread's Dataset of every
    element was most of a release's check (issue 15: ~0.27 of ~0.45 ms of CPU per object).

    Handled here: a 128-byte preamble and DICM, the file meta group, then explicit VR little
    endian elements of defined length to the exact end of the file. An undefined length (a
    sequence, encapsulated pixel data) is read by pydicom's element reader from that element on.
    Anything else (another transfer syntax, an unknown VR, a command or item tag at the top level,
    a length past the end, stray bytes at the end) returns None. `buf` holds the file's bytes
    (bytes or mmap), `fp` is the same file, seekable."""
    end_of_file = len(buf)
    if end_of_file < 132 or buf[128:132] != b"DICM":
        return None
    pos, syntax = 132, None
    while True:  # the file meta group (0002): all this needs of it is the transfer syntax
        if end_of_file - pos < 8:
            return None
        group, elem, vr, length = _HEADER.unpack_from(buf, pos)
        if group != 2:
            break
        if vr not in _KNOWN_VRS:
            return None
        if vr in _LONG_VRS:
            length, pos = _LENGTH32.unpack_from(buf, pos + 8)[0], pos + 12
        else:
            pos += 8
        if length == 0xFFFFFFFF or pos + length > end_of_file:
            return None
        if elem == 0x0010:
            syntax = bytes(buf[pos:pos + length]).strip(b"\0 ")
        pos += length
    if syntax not in _EXPLICIT_LE:
        return None
    elements: dict[BaseTag, Any] = {}
    encoding: Any = default_encoding  # what pydicom's reader decodes with, once the character set is read
    while pos < end_of_file:
        if end_of_file - pos < 8:
            return None
        group, elem, vr, length = _HEADER.unpack_from(buf, pos)
        if vr not in _KNOWN_VRS or group < 0x0008 or group == 0xFFFE:
            return None
        start = pos + 8
        if vr in _LONG_VRS:
            length, start = _LENGTH32.unpack_from(buf, start)[0], start + 4
        tag = group << 16 | elem
        if length == 0xFFFFFFFF:  # pydicom's reader finds its end (its delimiter search, its sequence items)
            fp.seek(pos)
            try:
                element = next(data_element_generator(fp, False, True, defer_size="1 KB", encoding=encoding), None)
            except Exception:  # noqa: BLE001 - what dcmread makes of it (it keeps a part on EOFError) is dcmread's
                return None
            if element is None or element.tag != tag:
                return None
            pos = fp.tell()
            if vr in (b"SQ", b"UN") or group & 1 or group >> 8 in _REPEATING_HIGH_BYTES:
                elements[element.tag] = element
            continue
        pos = start + length
        if pos > end_of_file:
            return None
        if group & 1 or group >> 8 in _REPEATING_HIGH_BYTES or tag in _CHECKED_TAGS or tag in _ALSO_KEPT \
                or vr in (b"SQ", b"UN"):
            text = vr.decode()
            value: Any = bytes(buf[start:pos]) if length else empty_value_for_VR(text, raw=True)
            elements[BaseTag(tag)] = RawDataElement(BaseTag(tag), text, length, value, start, False, True)
            if tag == 0x00080005:  # as pydicom's reader does
                encoding = convert_encodings(convert_string(value or b"", True))
    ds = FileDataset(fp, Dataset(elements), None, None, False, True)
    ds.set_original_encoding(False, True, ds._character_set)
    return ds


def check_bytes(source: Any, *, allow_burned_in: bool = True) -> list[str]:
    """violations() of a stored DICOM file, read whole (private or overlay elements can follow the
    pixel data): `source` is its bytes, or a binary file object (a file on disk is mapped, not
    read into memory).
    The elements violations() needs are read by `_read_candidates`; a file it does not read
    exactly as pydicom would goes through dcmread (the same findings either way)."""
    buf: Any
    mapped = None
    if isinstance(source, (bytes, bytearray)):
        buf, fp = source, io.BytesIO(source)
    elif isinstance(source, io.BytesIO):
        buf, fp = source.getvalue(), source
    else:  # a file on disk (anything else without a file descriptor is read into memory)
        fp = source
        fp.seek(0, io.SEEK_END)  # (also writes out what a buffered writer still holds)
        size = fp.tell()
        fp.seek(0)
        try:
            mapped = mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        except (AttributeError, OSError):  # io.UnsupportedOperation is an OSError
            mapped = None
        buf = mapped if mapped is not None else fp.read()
    try:
        ds = _read_candidates(buf, fp)
        if ds is None:
            fp.seek(0)
            ds = pydicom.dcmread(fp, defer_size="1 KB")
        return violations(ds, allow_burned_in=allow_burned_in)
    finally:
        if mapped is not None:
            mapped.close()
