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
