"""Factories for studies, readers and stacks used by the integration and end-to-end tests."""

from __future__ import annotations

import csv
from pathlib import Path

from radcurate.synth import write_cxr_dicom


def study_folder(root: Path, studies: list[tuple[str, str, str]], *, identifiable: set[str] = frozenset(),
                 not_dicom: set[str] = frozenset()) -> Path:
    """A folder in the ingest layout: reports.csv + dicom/<study_id>.dcm.

    `studies` are (study_id, patient_id, report); ids in `identifiable` get a PatientName,
    ids in `not_dicom` get a text file instead of DICOM.
    """
    (root / "dicom").mkdir(parents=True, exist_ok=True)
    with open(root / "reports.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["study_id", "patient_id", "report"])
        for i, (study_id, patient_id, report) in enumerate(studies):
            writer.writerow([study_id, patient_id, report])
            path = root / "dicom" / f"{study_id}.dcm"
            if study_id in not_dicom:
                path.write_text("this is a radiology report, not an image\n")
            else:
                write_cxr_dicom(path, study_id=study_id, patient_id=patient_id, seed=i,
                                identifiable=study_id in identifiable)
    return root


def dicom_bytes(tmp: Path, study_id: str, patient_id: str | None = None, *, identifiable: bool = False,
                seed: int = 0) -> bytes:
    """A de-identified CXR DICOM of `study_id` (raw when `identifiable`); its PatientID is
    `patient_id`, by default the `P-<study_id>` the e2e tests' ingest form sends."""
    patient_id = f"P-{study_id}" if patient_id is None else patient_id
    path = tmp / f"{study_id}.dcm"
    write_cxr_dicom(path, study_id=study_id, patient_id=patient_id, seed=seed, identifiable=identifiable)
    return path.read_bytes()


def add_series(study_dir: Path, *, instances: int, per_series: int = 200, size: int = 16) -> int:
    """Grow a synthetic lumbar study (a `synth_lumbar` ingest-layout folder) to `instances` DICOM
    instances: extra small axial MR series of the same study and patient, `per_series` each, with
    their own UIDs. For tests of studies far larger than the protocol's three series (a lumbar MRI
    with many series and thin slices). Returns how many files were added."""
    from datetime import date

    import numpy as np
    import pydicom
    from pydicom.uid import generate_uid

    from radcurate.synth.lumbar_dicom import MrEncoder, instance_values

    existing = sorted(p for p in study_dir.rglob("*.dcm"))
    first = pydicom.dcmread(existing[0], stop_before_pixels=True)
    encoder = MrEncoder(series_description="Axial T2 thin", plane="axial", pixel_spacing="3", slice_thickness="1",
                        weighting="T2", shape=(size, size))
    pixels = np.arange(size * size, dtype=np.uint16).reshape(size, size)
    added, series = 0, 0
    while len(existing) + added < instances:
        series += 1
        series_uid = generate_uid(entropy_srcs=[first.StudyInstanceUID, "extra", str(series)])
        folder = study_dir / f"extra-{series}"
        folder.mkdir()
        for n in range(1, min(per_series, instances - len(existing) - added) + 1):
            values = instance_values(
                sop_uid=generate_uid(entropy_srcs=[series_uid, str(n)]), study_uid=first.StudyInstanceUID,
                series_uid=series_uid, study_id=str(first.StudyID), patient_id=str(first.PatientID),
                study_date=date(2018, 1, 1), study_time="093000", series_number=10 + series, instance_number=n,
                position=(0.0, 0.0, float(n)), slice_location=float(n))
            (folder / f"{n}.dcm").write_bytes(encoder.encode(values, pixels))
            added += 1
    return added


def reexported(name: str, *, patient_id: str, syntax: str | None = None) -> bytes:
    """A real image from pydicom's test data (`name`) exported again: new Study/Series/SOP Instance
    UIDs, another PatientID (another PACS's record number) and, given `syntax`, another transfer
    syntax (so another file sha256; the decoded pixels are the same for a lossless one)."""
    import io

    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(get_testdata_file(name, download=False))
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = patient_id
    if syntax is not None:
        ds.compress(syntax)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
