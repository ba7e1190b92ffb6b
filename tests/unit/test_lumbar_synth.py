"""Synthetic lumbar MRI studies: valid MR objects, de-identified, deterministic, graded."""

import csv
import hashlib
import io
import json
from datetime import date

import numpy as np
import pydicom
import pytest
from pydicom import dcmwrite
from pydicom.filebase import DicomBytesIO

from radcurate.bulk_ingest import read_reports, study_files
from radcurate.synth.lumbar import synth_lumbar
from radcurate.synth.lumbar_dicom import MR_IMAGE_STORAGE, MrEncoder, instance_values
from services.common.deid import violations
from services.common.protocols.lumbar.competition import SeriesType, read_split
from services.common.protocols.lumbar.extract import extract_lumbar_grades
from services.common.protocols.lumbar.grid import Grade
from services.common.protocols.lumbar.mapping import grade_grid, suggest_grades
from services.common.taxonomy import load_taxonomy
from services.gateway.ingest import validate_study

N, SEED = 24, 5


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    out = tmp_path_factory.mktemp("lumbar")
    summary = synth_lumbar(N, SEED, out)
    truth = [json.loads(line) for line in (out / "truth.jsonl").read_text().splitlines()]
    return out, summary, truth


def test_every_study_has_three_ordered_series_of_mr_instances(archive):
    out, summary, truth = archive
    assert summary.n_studies == N and summary.n_instances == N * 39
    study = truth[0]
    by_series = {}
    for _name, data in study_files(out, study["study_id"]):
        ds = pydicom.dcmread(io.BytesIO(data))
        by_series.setdefault(ds.SeriesDescription, []).append((int(ds.InstanceNumber), ds))
    assert set(by_series) == {t.value for t in SeriesType}
    for instances in by_series.values():
        numbers = [n for n, _ in instances]
        assert sorted(numbers) == list(range(1, len(numbers) + 1)) and 10 <= len(numbers) <= 15
        assert len({ds.SeriesInstanceUID for _, ds in instances}) == 1
        _, ds = instances[0]
        assert ds.SOPClassUID == MR_IMAGE_STORAGE and ds.Modality == "MR"
        assert 64 <= ds.Rows <= 128 and len(ds.PixelSpacing) == 2 and len(ds.ImagePositionPatient) == 3
        assert ds.pixel_array.shape == (ds.Rows, ds.Columns)


def test_studies_pass_the_gateway_validation_and_carry_no_identifying_data(archive):
    out, _, truth = archive
    reports = {r["study_id"]: r for r in read_reports(out)}
    for study in truth[:3]:
        files = study_files(out, study["study_id"])
        row = reports[study["study_id"]]
        parsed, removed = validate_study(row["study_id"], row["patient_id"], row["report"], files, scrub=False)
        assert removed == [] and len(parsed) == 39
        ds = pydicom.dcmread(io.BytesIO(files[0][1]))
        assert violations(ds) == [] and ds.PatientIdentityRemoved == "YES"


def test_the_same_seed_writes_the_same_bytes(archive, tmp_path):
    out, _, truth = archive
    synth_lumbar(2, SEED, tmp_path)
    sid = truth[1]["study_id"]
    digest = lambda root: [hashlib.sha256(d).hexdigest() for _, d in study_files(root, sid)]  # noqa: E731
    assert digest(out) == digest(tmp_path)


def test_the_truth_has_25_grades_and_a_point_on_a_real_instance_for_each(archive):
    out, _, truth = archive
    for study in truth[:5]:
        assert len(study["grades"]) == 25 and len(study["coordinates"]) == 25
        files = {name for name, _ in study_files(out, study["study_id"])}
        for c in study["coordinates"]:
            assert f"{c['series_id']}/{c['instance_number']}.dcm" in files
            assert study["series"][c["series_id"]] in {t.value for t in SeriesType}
    grades = [g for s in truth for g in s["grades"].values()]
    assert {Grade(g) for g in grades} == set(Grade)
    assert grades.count("Normal/Mild") > len(grades) / 2


def test_reports_say_what_report_grades_record(archive):
    out, _, truth = archive
    taxonomy = load_taxonomy("lumbar")
    reports = {r["study_id"]: r["report"] for r in read_reports(out)}
    right = total = 0
    for study in truth:
        grid = grade_grid(suggest_grades(extract_lumbar_grades(reports[study["study_id"]], taxonomy)))
        right += sum(grid[cell].value == g for cell, g in study["report_grades"].items())
        total += 25
    assert right / total >= 0.98


def test_the_competition_layout_reads_back_as_the_truth(tmp_path):
    synth_lumbar(3, SEED, tmp_path, layout="competition")
    truth = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    studies = {s.study_id: s for s in read_split(tmp_path)}
    for t in truth:
        study = studies[t["study_id"]]
        assert {f"{c.value}_{lv.value}": g.value for (c, lv), g in study.grades.items()} == t["grades"]
        assert len(study.coordinates) == 25 and sum(map(len, study.images.values())) == 39
    with (tmp_path / "reports.csv").open(newline="") as f:
        assert len(list(csv.DictReader(f))) == 3


def test_an_unknown_layout_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown layout"):
        synth_lumbar(1, 0, tmp_path, layout="nifti")


def test_the_fast_encoder_writes_what_pydicom_writes():
    encoder = MrEncoder(series_description="Axial T2", plane="axial", pixel_spacing="3",
                        slice_thickness="4", weighting="T2", shape=(64, 64))
    values = instance_values(sop_uid="1.2.3.4", study_uid="1.2.3", series_uid="1.2.3.9",
                             study_id="4001009", patient_id="LP-000001", study_date=date(2019, 5, 6),
                             study_time="093000", series_number=3, instance_number=12,
                             position=(-96.0, -96.0, 16.0), slice_location=16.0)
    pixels = np.random.default_rng(1).integers(0, 4096, (64, 64)).astype(np.uint16)
    fp = DicomBytesIO()
    dcmwrite(fp, encoder.dataset(values, pixels), enforce_file_format=True)
    assert encoder.encode(values, pixels) == fp.getvalue()
