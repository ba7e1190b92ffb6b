"""`synth_cxr`: a de-identified chest-radiograph archive with reports and hidden truth.

Layout of `out_dir`:
  dicom/<study_id>.dcm  one CR image per study (de-identified, 256x256, 12-bit; smaller with
                        `image_size`, the scale bench's lighter pool); with
                        `lateral=True` dicom/<study_id>/1_frontal.dcm and 2_lateral.dcm
                        instead: the frontal view (the same bytes) and a lateral view (LL)
  reports.csv           study_id, patient_id, report (free text, multi-line)
  truth.jsonl           what each image really shows, and what its report says about it;
                        read only by the reader simulator and tests, never by the pipeline.
Everything is a pure function of (n_studies, seed): same inputs, same bytes.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from radcurate import progress
from radcurate.synth.cohort import StudyTruth, build_cohort
from radcurate.synth.dicom import image_rng, study_values, write_cxr_dicom
from radcurate.synth.encode import CxrEncoder
from radcurate.synth.image import SIZE, shrink
from radcurate.synth.labels import LABEL_IDS
from radcurate.synth.paint import render_chest
from radcurate.synth.report import Report, write_report

COHORT_STREAM, REPORT_STREAM = 1, 2  # seed-sequence tags: truth and wording vary independently
PARALLEL_MIN_STUDIES = 500  # below this a process pool costs more than it saves
CHUNK = 250  # studies per worker task (and per progress step)


@dataclass(frozen=True)
class SynthPaths:
    out_dir: Path
    dicom_dir: Path
    reports_csv: Path
    truth_jsonl: Path


@dataclass(frozen=True)
class SynthSummary:
    n_studies: int
    n_patients: int
    label_counts: dict[str, int]  # hidden-truth studies per label id, every label listed
    normal_count: int  # studies with none of the labels
    paths: SynthPaths

    def to_dict(self) -> dict:
        """JSON-ready, for the CLI to print."""
        data = asdict(self)
        data["paths"] = {k: str(v) for k, v in data["paths"].items()}
        return data


def _report_rng(seed: int, study_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, REPORT_STREAM, int(study_id.split("-")[1])])


def _write_text(cohort: list[StudyTruth], reports: list[Report], paths: SynthPaths) -> None:
    with paths.reports_csv.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["study_id", "patient_id", "report"])
        for truth, report in zip(cohort, reports, strict=True):
            writer.writerow([truth.study_id, truth.patient_id, report.text])
    with paths.truth_jsonl.open("w", encoding="utf-8") as f:
        for truth, report in zip(cohort, reports, strict=True):
            record = truth.to_json() | {"report_style": str(report.style),
                                        "report_mentions": report.mentions}
            f.write(json.dumps(record) + "\n")


def _image_job(truth: StudyTruth) -> dict:
    """What a worker needs to draw and write one study (no prior chain to pickle)."""
    return {"study_id": truth.study_id, "patient_id": truth.patient_id, "labels": truth.labels,
            "subtle": truth.subtle, "laterality": truth.laterality, "devices": truth.devices,
            "study_date": truth.study_date, "study_time": truth.study_time,
            "view_position": truth.view_position}


_ENCODER: CxrEncoder | None = None


def _write_dicoms(seed: int, dicom_dir: Path, jobs: list[dict], lateral: bool = False,
                  image_size: int = SIZE) -> int:
    """Worker: render and write a chunk of studies; one encoder per process (and image size)."""
    global _ENCODER
    if _ENCODER is None or _ENCODER.size != image_size:
        _ENCODER = CxrEncoder(image_size)
    for job in jobs:
        rng = image_rng(seed, job["study_id"])
        pixels = shrink(render_chest(job["labels"], job["subtle"], job["laterality"], job["devices"], rng),
                        image_size)
        if image_size != SIZE:
            # Averaging 4 x 4 blocks smooths away most of what tells two renders apart (a few base
            # chests, crops of one noise field): at 137,350 studies three pairs came out pixel-identical
            # and the gateway rightly refused them as one image under two study ids. A per-study
            # least-significant bit keeps every small image distinct, as real images are.
            pixels = pixels + rng.integers(0, 2, pixels.shape, dtype=np.uint16)
        values = study_values(study_id=job["study_id"], patient_id=job["patient_id"], seed=seed,
                              study_date=job["study_date"], study_time=job["study_time"],
                              view_position=job["view_position"])
        frontal = _ENCODER.encode(values, pixels)
        if not lateral:
            (dicom_dir / f"{job['study_id']}.dcm").write_bytes(frontal)
            continue
        folder = dicom_dir / job["study_id"]
        folder.mkdir(exist_ok=True)
        (folder / "1_frontal.dcm").write_bytes(frontal)
        write_cxr_dicom(folder / "2_lateral.dcm", study_id=job["study_id"], patient_id=job["patient_id"],
                        seed=seed, study_date=job["study_date"], study_time=job["study_time"],
                        view_position="LL")
    return len(jobs)


def _default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 8))


def _write_all_dicoms(cohort: list[StudyTruth], seed: int, dicom_dir: Path,
                      workers: int | None, lateral: bool = False, image_size: int = SIZE) -> None:
    jobs = [_image_job(truth) for truth in cohort]
    workers = workers or _default_workers()
    chunks = [jobs[i:i + CHUNK] for i in range(0, len(jobs), CHUNK)]
    with progress.current().task("synth DICOM", total=len(jobs), unit="studies") as task:
        if workers == 1 or len(jobs) < PARALLEL_MIN_STUDIES:
            for chunk in chunks:
                task.advance(_write_dicoms(seed, dicom_dir, chunk, lateral, image_size))
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for n in pool.map(_write_dicoms, [seed] * len(chunks), [dicom_dir] * len(chunks), chunks,
                              [lateral] * len(chunks), [image_size] * len(chunks)):
                task.advance(n)
    assert task.done == len(jobs)


def synth_cxr(n_studies: int, seed: int, out_dir: Path, *,
              workers: int | None = None, lateral: bool = False, image_size: int = SIZE) -> SynthSummary:
    """Write `n_studies` synthetic CXR studies (DICOM, reports, hidden truth) under `out_dir`.

    `lateral`: each study also gets a lateral view (a folder of two instances per study).
    `workers` only changes speed, never the output; by default one process per core (max 8).
    `image_size` (a divisor of 256): pixels across each image, the full-size chest averaged down;
    the same cohort, reports and UIDs in fewer bytes (the scale bench's lighter pool: 64 gives
    ~9.6 KB per study instead of ~130 KB). Frontal views only.
    """
    if n_studies < 1:
        raise ValueError("n_studies must be at least 1")
    if image_size != SIZE and lateral:
        raise ValueError("smaller images are made for frontal-only pools; lateral needs the full size")
    shrink(np.zeros((SIZE, SIZE), np.uint16), image_size)  # a bad size fails before anything is written
    out_dir = Path(out_dir)
    paths = SynthPaths(out_dir, out_dir / "dicom", out_dir / "reports.csv",
                       out_dir / "truth.jsonl")
    paths.dicom_dir.mkdir(parents=True, exist_ok=True)
    cohort = build_cohort(np.random.default_rng([seed, COHORT_STREAM]), n_studies)
    reports = [write_report(truth, _report_rng(seed, truth.study_id)) for truth in cohort]
    _write_text(cohort, reports, paths)
    _write_all_dicoms(cohort, seed, paths.dicom_dir, workers, lateral, image_size)
    counts = Counter(str(label) for truth in cohort for label in truth.labels)
    return SynthSummary(n_studies=len(cohort),
                        n_patients=len({truth.patient_id for truth in cohort}),
                        label_counts={label: counts.get(label, 0) for label in LABEL_IDS},
                        normal_count=sum(1 for truth in cohort if not truth.labels),
                        paths=paths)
