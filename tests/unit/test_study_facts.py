"""The study facts a reader sees beside the image: read from the de-identified DICOM header at
ingest (an age band, never the exact age) and the indication from the report."""

from __future__ import annotations

import datetime

import pydicom
import pytest

from services.gateway.api.routes.studies import indication_of
from services.gateway.ingest import _age_band, study_facts


@pytest.mark.parametrize(("age", "band"), [("045Y", "40-49"), ("009Y", "0-9"), ("006M", "0-9"), ("003W", "0-9"),
                                           ("089Y", "80-89"), ("090Y", "90+"), ("102Y", "90+"), ("", None),
                                           ("forty", None)])
def test_an_age_is_kept_as_a_decade_band_and_over_89_as_one_band(age, band):
    assert _age_band(age) == band


def test_facts_come_from_the_header_and_malformed_values_are_unknown():
    ds = pydicom.Dataset()
    ds.ViewPosition, ds.PatientSex, ds.PatientAge, ds.StudyDate = "AP ", "F", "071Y", "20190230"
    ds.WindowCenter, ds.WindowWidth = ["1700", "1500"], ["3200", "3000"]
    ds.PhotometricInterpretation = "MONOCHROME1"
    facts = study_facts(ds)
    assert facts == {"view_position": "AP", "patient_sex": "F", "age_band": "70-79", "study_date": None,
                     "window_center": 1700.0, "window_width": 3200.0, "photometric_interpretation": "MONOCHROME1"}
    ds.StudyDate, ds.PatientSex, ds.WindowWidth = "20190228", "X", "0"
    facts = study_facts(ds)
    assert facts["study_date"] == datetime.date(2019, 2, 28) and facts["patient_sex"] is None
    assert facts["window_center"] is None and facts["window_width"] is None
    assert set(study_facts(pydicom.Dataset()).values()) == {None}


@pytest.mark.parametrize(("report", "indication"), [
    ("EXAMINATION: CHEST PA AND LATERAL\nINDICATION: Cough and fever.\nCOMPARISON: None.", "Cough and fever."),
    ("CLINICAL HISTORY: shortness of breath FINDINGS: clear lungs.", "shortness of breath"),
    ("REASON FOR EXAM: line placement\n\nIMPRESSION: tip in the SVC.", "line placement"),
    ("IMPRESSION: No acute cardiopulmonary process.", None),
    ("", None),
])
def test_the_indication_is_the_reports_own_section(report, indication):
    assert indication_of(report) == indication
