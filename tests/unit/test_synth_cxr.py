"""The synthetic CXR generator: deterministic, de-identified, and realistically imperfect."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import pytest

from radcurate.synth import CR_IMAGE_STORAGE, LABEL_IDS, synth_cxr, write_cxr_dicom
from radcurate.synth.cohort import build_cohort
from radcurate.synth.cxr import PARALLEL_MIN_STUDIES

N = 400
SEED = 7
IDENTIFYING = ("PatientName", "PatientBirthDate", "InstitutionName", "ReferringPhysicianName",
               "OtherPatientIDs", "AccessionNumber", "PatientAddress")
COMMON = ("support_devices", "pleural_effusion", "atelectasis", "cardiomegaly")
RARE = ("pneumothorax", "fracture", "interstitial_lung_disease", "mediastinal_hilar_abnormality")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    summary = synth_cxr(N, SEED, out)
    truth = [json.loads(line) for line in (out / "truth.jsonl").read_text().splitlines()]
    with (out / "reports.csv").open(newline="") as f:
        reports = {row["study_id"]: row["report"] for row in csv.DictReader(f)}
    return summary, truth, reports


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_same_seed_gives_byte_identical_outputs(archive, tmp_path):
    summary, _, _ = archive
    again = synth_cxr(N, SEED, tmp_path)
    for name in ("reports.csv", "truth.jsonl"):
        assert _digest(summary.paths.out_dir / name) == _digest(tmp_path / name)
    for study_id in ("CXR-000001", f"CXR-{N:06d}"):
        assert (_digest(summary.paths.dicom_dir / f"{study_id}.dcm")
                == _digest(again.paths.dicom_dir / f"{study_id}.dcm"))


def test_another_seed_gives_another_archive(archive, tmp_path):
    summary, _, _ = archive
    synth_cxr(N, SEED + 1, tmp_path)
    assert _digest(summary.paths.reports_csv) != _digest(tmp_path / "reports.csv")


def test_parallel_workers_write_the_same_files_as_one_process(tmp_path):
    n = PARALLEL_MIN_STUDIES
    one = synth_cxr(n, 3, tmp_path / "one", workers=1)
    two = synth_cxr(n, 3, tmp_path / "two", workers=2)
    for study_id in ("CXR-000001", f"CXR-{n // 2:06d}", f"CXR-{n:06d}"):
        assert (_digest(one.paths.dicom_dir / f"{study_id}.dcm")
                == _digest(two.paths.dicom_dir / f"{study_id}.dcm"))


def test_every_study_has_one_de_identified_cr_image(archive):
    summary, truth, _ = archive
    files = sorted(summary.paths.dicom_dir.glob("*.dcm"))
    assert [f.stem for f in files] == [t["study_id"] for t in truth]
    for record in truth[:25]:
        ds = pydicom.dcmread(summary.paths.dicom_dir / f"{record['study_id']}.dcm")
        assert ds.SOPClassUID == CR_IMAGE_STORAGE == ds.file_meta.MediaStorageSOPClassUID
        assert (ds.Modality, ds.BodyPartExamined) == ("CR", "CHEST")
        assert ds.ViewPosition == record["view_position"] in ("PA", "AP")
        assert (ds.StudyID, ds.PatientID) == (record["study_id"], record["patient_id"])
        assert ds.StudyDate == record["study_date"].replace("-", "")
        assert ds.PatientIdentityRemoved == "YES" and ds.DeidentificationMethod
        assert not [k for k in IDENTIFYING if k in ds]
        assert (ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored) == ("MONOCHROME2", 16, 12)
        pixels = ds.pixel_array
        assert pixels.shape == (256, 256) and pixels.max() <= 4095 and pixels.std() > 100


def test_uids_are_unique_per_study(archive):
    summary, truth, _ = archive
    uids = [pydicom.dcmread(summary.paths.dicom_dir / f"{t['study_id']}.dcm",
                            specific_tags=["StudyInstanceUID"]).StudyInstanceUID for t in truth[:50]]
    assert len(set(uids)) == len(uids)


def test_the_fast_writer_matches_write_cxr_dicom_byte_for_byte(archive, tmp_path):
    summary, truth, _ = archive
    record = next(t for t in truth if t["labels"] and t["laterality"])
    image = pydicom.dcmread(summary.paths.dicom_dir / f"{record['study_id']}.dcm")
    path = tmp_path / "one.dcm"
    write_cxr_dicom(path, study_id=record["study_id"], patient_id=record["patient_id"], seed=SEED,
                    labels=record["labels"], subtle=record["subtle"],
                    laterality=record["laterality"], devices=record["devices"],
                    study_date=date.fromisoformat(record["study_date"]),
                    study_time=image.StudyTime,
                    view_position=record["view_position"])
    assert _digest(path) == _digest(summary.paths.dicom_dir / f"{record['study_id']}.dcm")


def test_identifiable_files_carry_patient_name_and_birth_date(tmp_path):
    plain, raw = tmp_path / "plain.dcm", tmp_path / "raw.dcm"
    write_cxr_dicom(plain, study_id="CXR-000009", patient_id="PT-000004", seed=1)
    write_cxr_dicom(raw, study_id="CXR-000009", patient_id="PT-000004", seed=1, identifiable=True)
    assert "PatientName" not in pydicom.dcmread(plain)
    ds = pydicom.dcmread(raw)
    assert str(ds.PatientName) and ds.PatientBirthDate and ds.PatientIdentityRemoved == "NO"


def test_prevalence_is_skewed_like_a_hospital_archive():
    cohort = build_cohort(np.random.default_rng(11), 5000)
    share = Counter(str(label) for study in cohort for label in study.labels)
    share = {label: share[label] / len(cohort) for label in LABEL_IDS}
    assert min(share[c] for c in COMMON) > 2 * max(share[r] for r in RARE)
    assert all(0.003 <= share[r] <= 0.05 for r in RARE)
    assert 0.30 <= sum(1 for s in cohort if not s.labels) / len(cohort) <= 0.45


def test_findings_co_occur_as_in_heart_failure_and_the_icu():
    cohort = build_cohort(np.random.default_rng(12), 5000)

    def rate(have, given):
        pool = [s for s in cohort if given(s)]
        return sum(1 for s in pool if have in s.labels) / len(pool)

    assert rate("cardiomegaly", lambda s: "pulmonary_edema" in s.labels) > 2 * rate("cardiomegaly", lambda s: True)
    assert rate("pleural_effusion", lambda s: "pulmonary_edema" in s.labels) > 0.5
    assert rate("support_devices", lambda s: s.setting == "icu") > 0.7
    assert rate("support_devices", lambda s: s.setting == "outpatient") < 0.1


def test_some_patients_have_several_studies_in_date_order(archive):
    _, truth, _ = archive
    per_patient = Counter(t["patient_id"] for t in truth)
    assert any(n >= 3 for n in per_patient.values()) and per_patient.most_common(1)[0][1] <= 4
    by_id = {t["study_id"]: t for t in truth}
    followups = [t for t in truth if t["prior_study_id"]]
    assert followups
    for t in followups:
        prior = by_id[t["prior_study_id"]]
        assert prior["patient_id"] == t["patient_id"] and prior["study_date"] < t["study_date"]


def test_summary_counts_match_the_hidden_truth(archive):
    summary, truth, _ = archive
    counts = Counter(label for t in truth for label in t["labels"])
    assert summary.label_counts == {label: counts.get(label, 0) for label in LABEL_IDS}
    assert summary.normal_count == sum(1 for t in truth if not t["labels"])
    assert summary.n_patients == len({t["patient_id"] for t in truth}) < summary.n_studies == N


def test_reports_csv_keeps_multi_line_reports_whole(archive):
    summary, truth, reports = archive
    assert list(reports) == [t["study_id"] for t in truth]
    assert any("\n" in text for text in reports.values())
    assert all(re.fullmatch(r"CXR-\d{6}", study_id) for study_id in reports)


def test_absent_findings_are_negated(archive):
    _, truth, reports = archive
    negated = [t for t in truth if t["report_mentions"].get("pneumothorax") == "negated"
               and "pneumothorax" not in t["labels"]]
    assert len(negated) > N / 4
    said = [t for t in negated
            if re.search(r"\bno\b[^.]*pn\w*thora", reports[t["study_id"]], re.IGNORECASE)]
    assert len(said) >= 0.95 * len(negated)


def test_reports_hedge_both_true_and_false_findings(archive):
    _, truth, reports = archive
    hedged = [(t, label) for t in truth for label, m in t["report_mentions"].items() if m == "uncertain"]
    assert any(label in t["labels"] for t, label in hedged)
    assert any(label not in t["labels"] for t, label in hedged)
    cues = re.compile(r"possibl|cannot exclude|cannot be excluded|may represent|may be|questionable", re.I)
    assert all(cues.search(reports[t["study_id"]]) for t, _ in hedged)


def test_reports_miss_only_subtle_findings_and_sometimes_over_call(tmp_path):
    synth_cxr(1500, 5, tmp_path, workers=1)
    truth = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    omitted = [(t, label) for t in truth for label, m in t["report_mentions"].items() if m == "omitted"]
    assert omitted and all(label in t["subtle"] for t, label in omitted)
    assert any(m in ("present", "stable") and label not in t["labels"]
               for t in truth for label, m in t["report_mentions"].items())


def test_follow_ups_say_stable_for_persisting_and_resolved_for_gone_findings(archive):
    _, truth, reports = archive
    stable = [t for t in truth if "stable" in t["report_mentions"].values()]
    resolved = [t for t in truth if "resolved" in t["report_mentions"].values()]
    assert stable and resolved
    assert all(t["prior_study_id"] for t in stable + resolved)
    assert all(re.search(r"stable|unchanged|unchagned|persistent", reports[t["study_id"]], re.I)
               for t in stable)
    assert all(re.search(r"resolved|resolution|no longer|removed|removal", reports[t["study_id"]], re.I)
               for t in resolved)


def test_a_lateral_view_is_its_own_instance_of_the_same_study_and_leaves_the_frontal_bytes_alone(tmp_path):
    single = synth_cxr(2, 5, tmp_path / "single")
    both = synth_cxr(2, 5, tmp_path / "both", lateral=True)
    for sid in ("CXR-000001", "CXR-000002"):
        frontal = both.paths.dicom_dir / sid / "1_frontal.dcm"
        assert frontal.read_bytes() == (single.paths.dicom_dir / f"{sid}.dcm").read_bytes()
        f, lat = pydicom.dcmread(frontal), pydicom.dcmread(both.paths.dicom_dir / sid / "2_lateral.dcm")
        assert lat.ViewPosition == "LL" and f.ViewPosition in {"PA", "AP"}
        assert lat.StudyInstanceUID == f.StudyInstanceUID
        assert lat.SeriesInstanceUID != f.SeriesInstanceUID and lat.SOPInstanceUID != f.SOPInstanceUID
        pixels = lat.pixel_array
        assert pixels.shape == f.pixel_array.shape and pixels.std() > 200  # an image, not a blank


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory):
    """The archive fixture's cohort again with 64 px images (the scale bench's lighter pool)."""
    return synth_cxr(N, SEED, tmp_path_factory.mktemp("synth64"), image_size=64)


def test_smaller_images_are_the_same_studies_with_the_chest_averaged_down(archive, small_archive):
    summary, truth, _ = archive
    for name in ("reports.csv", "truth.jsonl"):
        assert _digest(summary.paths.out_dir / name) == _digest(small_archive.paths.out_dir / name)
    for sid in ("CXR-000001", f"CXR-{N // 2:06d}", f"CXR-{N:06d}"):
        full = pydicom.dcmread(summary.paths.dicom_dir / f"{sid}.dcm")
        small = pydicom.dcmread(small_archive.paths.dicom_dir / f"{sid}.dcm")
        assert (small.Rows, small.Columns) == (64, 64)
        assert [str(v) for v in small.PixelSpacing] == ["6.72", "6.72"]  # the same 43 cm detector
        assert [str(v) for v in full.PixelSpacing] == ["1.68", "1.68"]
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID", "StudyDate",
                        "ViewPosition", "PatientIdentityRemoved", "BitsStored"):
            assert small[keyword].value == full[keyword].value
        expected = full.pixel_array.reshape(64, 4, 64, 4).mean(axis=(1, 3)).round()
        difference = small.pixel_array.astype(np.int32) - expected.astype(np.int32)
        assert set(np.unique(difference)) <= {0, 1} and difference.any()  # plus a per-study low bit
    pixels = {pydicom.dcmread(p).pixel_array.tobytes() for p in small_archive.paths.dicom_dir.glob("*.dcm")}
    assert len(pixels) == N  # no two studies share an image (the gateway would refuse the second)
    sizes = [p.stat().st_size for p in small_archive.paths.dicom_dir.glob("*.dcm")]
    assert len(sizes) == N and max(sizes) < 11_000  # ~9.6 KB against ~130 KB at 256 px


def test_the_fast_writer_matches_write_cxr_dicom_at_a_smaller_size_too(small_archive):
    from radcurate.synth.dicom import cxr_dataset

    path = small_archive.paths.dicom_dir / "CXR-000007.dcm"
    image = pydicom.dcmread(path)
    ds = cxr_dataset(study_id=image.StudyID, patient_id=image.PatientID, seed=SEED, pixels=image.pixel_array,
                     study_date=date(int(image.StudyDate[:4]), int(image.StudyDate[4:6]), int(image.StudyDate[6:])),
                     study_time=image.StudyTime, view_position=image.ViewPosition)
    written = path.with_name("pydicom.dcm.tmp")
    pydicom.dcmwrite(written, ds, enforce_file_format=True)
    assert _digest(written) == _digest(path)
    written.unlink()


def test_parallel_workers_write_the_same_small_files_as_one_process(tmp_path):
    n = PARALLEL_MIN_STUDIES
    one = synth_cxr(n, 3, tmp_path / "one", workers=1, image_size=64)
    two = synth_cxr(n, 3, tmp_path / "two", workers=2, image_size=64)
    for study_id in ("CXR-000001", f"CXR-{n // 2:06d}", f"CXR-{n:06d}"):
        assert pydicom.dcmread(two.paths.dicom_dir / f"{study_id}.dcm").Rows == 64
        assert (_digest(one.paths.dicom_dir / f"{study_id}.dcm")
                == _digest(two.paths.dicom_dir / f"{study_id}.dcm"))


@pytest.mark.parametrize("size, lateral", [(100, False), (0, False), (512, False), (64, True)])
def test_an_image_size_the_generator_cannot_make_is_refused_before_anything_is_written(tmp_path, size, lateral):
    with pytest.raises(ValueError):
        synth_cxr(3, 1, tmp_path / "out", image_size=size, lateral=lateral)
    assert not (tmp_path / "out").exists()
