"""`synth_lumbar`: synthetic, de-identified lumbar spine MRI studies with reports and truth.

Each study has three series (Sagittal T1, Sagittal T2/STIR, Axial T2; 12, 12 and 15 MR
instances of 96x96 / 64x64 pixels), a free-text report written from the hidden grades, and the
hidden truth (25 grades and a point per finding) that only the reader simulator and tests read.

layout="ingest" (what `radcurate ingest` reads):
  reports.csv, truth.jsonl, dicom/<study_id>/<series_id>/<instance_number>.dcm
layout="competition" (what the RSNA 2024 competition shipped; `services.common.protocols.lumbar.competition`):
  train.csv, train_label_coordinates.csv, train_series_descriptions.csv,
  train_images/<study_id>/<series_id>/<instance_number>.dcm, plus reports.csv and truth.jsonl
Everything is a pure function of (n_studies, seed, layout).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from radcurate import progress
from radcurate.synth.lumbar_dicom import MrEncoder, instance_values
from radcurate.synth.lumbar_paint import series_images
from radcurate.synth.lumbar_report import LumbarReport, write_lumbar_report
from radcurate.synth.lumbar_truth import AX_SIZE, SAG_SIZE, LumbarStudyTruth, build_lumbar_cohort
from services.common.protocols.lumbar.competition import CompetitionStudy, SeriesType, write_split

COHORT_STREAM, REPORT_STREAM, IMAGE_STREAM = 11, 12, 13  # seed-sequence tags
LAYOUTS = ("ingest", "competition")
# (plane, pixel spacing mm, slice thickness mm, weighting, image size) per series type
SERIES = {SeriesType.SAGITTAL_T1: ("sagittal", "2.6", "4", "T1", SAG_SIZE),
          SeriesType.SAGITTAL_T2_STIR: ("sagittal", "2.6", "4", "T2", SAG_SIZE),
          SeriesType.AXIAL_T2: ("axial", "3", "4", "T2", AX_SIZE)}
FIRST_DAY = date(2016, 1, 1)


@dataclass(frozen=True)
class LumbarSynthSummary:
    n_studies: int
    n_instances: int
    grade_counts: dict[str, int]  # hidden-truth cells per grade
    out_dir: str
    layout: str


def synth_lumbar(n_studies: int, seed: int, out_dir: Path,
                 layout: str = "ingest") -> LumbarSynthSummary:
    """Write `n_studies` synthetic lumbar MRI studies under `out_dir` in `layout`."""
    if n_studies < 1:
        raise ValueError("n_studies must be at least 1")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cohort = build_lumbar_cohort(np.random.default_rng([seed, COHORT_STREAM]), n_studies)
    reports = [write_lumbar_report(t, np.random.default_rng([seed, REPORT_STREAM, i]))
               for i, t in enumerate(cohort)]
    images = out_dir / ("dicom" if layout == "ingest" else "train_images")
    encoders = {t: MrEncoder(series_description=t.value, plane=p, pixel_spacing=s,
                             slice_thickness=th, weighting=w, shape=(n, n))
                for t, (p, s, th, w, n) in SERIES.items()}
    n_instances = 0
    with progress.current().task("synth MRI", total=len(cohort), unit="studies") as task:
        for i, t in enumerate(cohort):
            n_instances += _write_study(t, i, seed, images, encoders)
            task.advance()
    _write_text(cohort, reports, out_dir)
    if layout == "competition":
        write_split(out_dir, (_competition_study(t) for t in cohort))
    counts = {g: sum(g == v for t in cohort for v in t.grade_record().values())
              for g in ("Normal/Mild", "Moderate", "Severe")}
    return LumbarSynthSummary(len(cohort), n_instances, counts, str(out_dir), layout)


def _write_study(truth: LumbarStudyTruth, index: int, seed: int, images: Path,
                 encoders: dict[SeriesType, MrEncoder]) -> int:
    rng = np.random.default_rng([seed, IMAGE_STREAM, index])
    study_uid = generate_uid(entropy_srcs=[str(seed), truth.study_id])
    day = FIRST_DAY + timedelta(days=int(rng.integers(0, 5 * 365)))
    written = 0
    for number, series in enumerate(SeriesType, start=1):
        series_id = truth.series_ids[series]
        folder = images / truth.study_id / series_id
        folder.mkdir(parents=True, exist_ok=True)
        series_uid = generate_uid(entropy_srcs=[str(seed), truth.study_id, series_id])
        for instance, pixels in enumerate(series_images(truth, series, rng), start=1):
            values = instance_values(
                sop_uid=generate_uid(entropy_srcs=[series_uid, str(instance)]),
                study_uid=study_uid, series_uid=series_uid, study_id=truth.study_id,
                patient_id=truth.patient_id, study_date=day, study_time="093000",
                series_number=number, instance_number=instance,
                position=_position(series, instance), slice_location=_position(series, instance)[
                    0 if SERIES[series][0] == "sagittal" else 2])
            (folder / f"{instance}.dcm").write_bytes(encoders[series].encode(values, pixels))
            written += 1
    return written


def _position(series: SeriesType, instance: int) -> tuple[float, float, float]:
    """ImagePositionPatient (LPS, mm): sagittal slices step right -> left, axial foot -> head
    is not needed, so axial slices step head -> foot through the five discs."""
    plane, spacing, thickness, _, size = SERIES[series]
    half = float(spacing) * size / 2
    if plane == "sagittal":
        return (-24.0 + (instance - 1) * float(thickness), -half, half)
    return (-half, -half, 60.0 - (instance - 1) * float(thickness))


def _write_text(cohort: list[LumbarStudyTruth], reports: list[LumbarReport], out: Path) -> None:
    with (out / "reports.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["study_id", "patient_id", "report"])
        writer.writerows([t.study_id, t.patient_id, r.text] for t, r in zip(cohort, reports, strict=True))
    with (out / "truth.jsonl").open("w", encoding="utf-8") as f:
        for t, r in zip(cohort, reports, strict=True):
            f.write(json.dumps(_truth_record(t, r)) + "\n")


def _truth_record(truth: LumbarStudyTruth, report: LumbarReport) -> dict:
    return {"study_id": truth.study_id, "patient_id": truth.patient_id,
            "series": {truth.series_ids[s]: s.value for s in SeriesType},
            "pixel_spacing": {truth.series_ids[s]: float(SERIES[s][1]) for s in SeriesType},
            "grades": truth.grade_record(), "report_grades": report.report_grades,
            "coordinates": [{"series_id": c.series_id, "instance_number": c.instance_number,
                             "condition": c.condition.value, "level": c.level.value,
                             "x": c.x, "y": c.y} for c in truth.coordinates]}


def _competition_study(truth: LumbarStudyTruth) -> CompetitionStudy:
    return CompetitionStudy(truth.study_id,
                            series={truth.series_ids[s]: s.value for s in SeriesType},
                            grades=dict(truth.grades), coordinates=list(truth.coordinates))
