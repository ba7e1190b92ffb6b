"""Write one de-identified chest radiograph as a CR DICOM file (pydicom 3).

The files look like what a de-identification pipeline emits: pseudonymous PatientID, shifted
dates, PatientIdentityRemoved=YES and the PS3.15 method codes, and none of the identifying
attributes (PatientName, PatientBirthDate, InstitutionName, ReferringPhysicianName, ...).
`identifiable=True` puts those back, so tests can check that the ingest rejects them.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path

import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from radcurate.synth.labels import Label
from radcurate.synth.lateral import LATERAL_VIEWS, render_lateral
from radcurate.synth.paint import render_chest

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
DETECTOR_MM = 430  # a 43 cm detector, however many pixels span it
PIXEL_SPACING_MM = "1.68"  # 256 px across it (the generator's full size)
DEIDENTIFICATION_METHOD = "RadCurate synthetic; PS3.15 Annex E Basic Profile; dates shifted"
# (code value, meaning) from DICOM CID 7050 De-identification Method
DEIDENTIFICATION_CODES = (("113100", "Basic Application Confidentiality Profile"),
                          ("113105", "Clean Descriptors Option"),
                          ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"))
DEFAULT_STUDY_DATE = date(2018, 6, 1)
IMAGE_STREAM = 3  # seed-sequence tag that keeps pixel randomness apart from reports and truth


def image_rng(seed: int, study_id: str) -> np.random.Generator:
    """The pixel stream of one study: independent of every other study, so files can be
    written in any order, in parallel, and still match `write_cxr_dicom` byte for byte."""
    return np.random.default_rng([seed, IMAGE_STREAM, zlib.crc32(study_id.encode())])


def study_uids(seed: int, study_id: str, view_position: str = "PA") -> tuple[str, str, str]:
    """(study, series, SOP instance) UIDs: the same seed and study id give the same UIDs. A
    lateral view is its own series and instance in the same study (the frontal view's UIDs are
    what they always were)."""
    suffix = f"-{view_position}" if view_position in LATERAL_VIEWS else ""
    return tuple(generate_uid(entropy_srcs=[str(seed), study_id, part])
                 for part in ("study", f"series{suffix}", f"instance{suffix}"))


def _deidentification(ds: Dataset) -> None:
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = DEIDENTIFICATION_METHOD
    codes = []
    for value, meaning in DEIDENTIFICATION_CODES:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = codes
    ds.LongitudinalTemporalInformationModified = "MODIFIED"


def _add_identifiers(ds: Dataset, rng: np.random.Generator) -> None:
    """What a raw modality export carries: the attributes de-identification must remove."""
    ds.PatientName = ("DOE^JANE", "SMITH^JOHN", "GARCIA^MARIA")[int(rng.integers(3))]
    ds.PatientBirthDate = f"19{int(rng.integers(30, 99))}0{int(rng.integers(1, 10))}15"
    ds.InstitutionName = "Example General Hospital"
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    ds.OtherPatientIDs = f"MRN{int(rng.integers(10**6, 10**7))}"
    ds.AccessionNumber = f"A{int(rng.integers(10**7, 10**8))}"
    ds.PatientIdentityRemoved = "NO"
    del ds.DeidentificationMethod, ds.DeidentificationMethodCodeSequence


def pixel_spacing_mm(columns: int) -> str:
    """PixelSpacing (a DS) for `columns` pixels across the detector: PIXEL_SPACING_MM at 256,
    coarser for the bench's smaller images (the same chest, fewer pixels)."""
    return f"{DETECTOR_MM / columns:.2f}"


def _image_module(ds: Dataset, pixels: np.ndarray) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    spacing = pixel_spacing_mm(pixels.shape[1])
    ds.PixelSpacing = ds.ImagerPixelSpacing = [spacing, spacing]
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = "1700", "3200", "LINEAR"
    ds.BurnedInAnnotation, ds.LossyImageCompression = "NO", "00"
    ds.PixelData = pixels.astype("<u2").tobytes()


def study_values(*, study_id: str, patient_id: str, seed: int, study_date: date,
                 study_time: str, view_position: str) -> dict[str, str]:
    """The attributes that differ between studies (pixel data aside), keyed by keyword.

    The fast encoder splices exactly these into a template; keep the two paths in step here.
    """
    study_uid, series_uid, sop_uid = study_uids(seed, study_id, view_position)
    day = study_date.strftime("%Y%m%d")
    return {"SOPInstanceUID": sop_uid, "StudyDate": day, "ContentDate": day,
            "StudyTime": study_time, "ContentTime": study_time,
            "SeriesDescription": f"CHEST {view_position}", "PatientID": patient_id,
            "ViewPosition": view_position, "StudyInstanceUID": study_uid,
            "SeriesInstanceUID": series_uid, "StudyID": study_id}


def cxr_dataset(*, study_id: str, patient_id: str, seed: int, pixels: np.ndarray,
                study_date: date, study_time: str, view_position: str) -> Dataset:
    """A complete, de-identified CR dataset (file meta included) around `pixels`."""
    values = study_values(study_id=study_id, patient_id=patient_id, seed=seed,
                          study_date=study_date, study_time=study_time,
                          view_position=view_position)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CR_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = values["SOPInstanceUID"]
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = CR_IMAGE_STORAGE
    ds.Modality, ds.Manufacturer = "CR", "RadCurate Synthetic"
    ds.StudyDescription = "XR CHEST 1 VIEW"
    _deidentification(ds)
    ds.BodyPartExamined = "CHEST"
    lateral = view_position in LATERAL_VIEWS
    ds.SeriesNumber, ds.InstanceNumber = (2, 1) if lateral else (1, 1)
    ds.PatientOrientation = ["P", "F"] if lateral else ["L", "F"]
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    _image_module(ds, pixels)
    return ds


def write_cxr_dicom(path: Path, *, study_id: str, patient_id: str, seed: int,
                    identifiable: bool = False, labels: Iterable[Label] = (),
                    subtle: Iterable[Label] = (), laterality: Mapping | None = None,
                    devices: Iterable[str] = (), study_date: date = DEFAULT_STUDY_DATE,
                    study_time: str = "120000", view_position: str = "PA") -> None:
    """Write one chest radiograph for `study_id`; pixels and UIDs depend only on seed and id.

    `labels`/`subtle`/`laterality`/`devices` paint the hidden truth on the image; with the
    defaults the chest is normal. `identifiable=True` adds patient-identifying attributes.
    A lateral `view_position` (LL, RL, LAT) writes the study's lateral view: its own series and
    instance, a lateral image (findings are painted on the frontal view only).
    """
    if view_position in LATERAL_VIEWS:
        rng = np.random.default_rng([seed, IMAGE_STREAM, zlib.crc32(f"{study_id}-{view_position}".encode())])
        pixels = render_lateral(rng)
    else:
        rng = image_rng(seed, study_id)
        pixels = render_chest(labels, subtle, laterality or {}, devices, rng)
    ds = cxr_dataset(study_id=study_id, patient_id=patient_id, seed=seed, pixels=pixels,
                     study_date=study_date, study_time=study_time, view_position=view_position)
    if identifiable:
        _add_identifiers(ds, rng)
    dcmwrite(path, ds, enforce_file_format=True)
