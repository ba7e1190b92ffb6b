"""The RSNA 2024 lumbar competition file layout: read it (import), write it (export).

Layout under a root (prefix `train`, as the competition ships it):
  train.csv                      study_id + 25 `<condition>_<level>` columns, values
                                 Normal/Mild | Moderate | Severe | empty (not graded)
  train_label_coordinates.csv    study_id, series_id, instance_number, condition, level, x, y
  train_series_descriptions.csv  study_id, series_id, series_description
  train_images/<study_id>/<series_id>/<instance_number>.dcm
RadCurate releases lumbar benchmarks in exactly this shape (released and holdout each get their
own root), and imports datasets laid out like it, turning the prior labels into a structured
report the extractor reads back as suggestions (`prior_report`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from services.common.protocols.lumbar.grid import CONDITIONS, LEVELS, Condition, Grade, Level, cell_id
from services.common.protocols.lumbar.scoring import split_row_id, truth_from_train_csv

TRAIN_COLUMNS = ("study_id", *(cell_id(c, lv) for c in CONDITIONS for lv in LEVELS))
COORDINATE_COLUMNS = ("study_id", "series_id", "instance_number", "condition", "level", "x", "y")
SERIES_COLUMNS = ("study_id", "series_id", "series_description")
NO_PRIOR_REPORT = "No report. Imported from a competition-layout dataset without prior grades."

Cell = tuple[Condition, Level]


class SeriesType(StrEnum):
    """The competition's series descriptions."""

    SAGITTAL_T1 = "Sagittal T1"
    SAGITTAL_T2_STIR = "Sagittal T2/STIR"
    AXIAL_T2 = "Axial T2"


def condition_title(condition: Condition) -> str:
    """"Spinal Canal Stenosis": the spelling of train_label_coordinates.csv."""
    return condition.value.replace("_", " ").title()


def level_name(level: Level) -> str:
    """"L1/L2": the spelling of train_label_coordinates.csv."""
    return level.value.upper().replace("_", "/")


_TITLES = {condition_title(c): c for c in CONDITIONS}
_LEVEL_NAMES = {level_name(lv): lv for lv in LEVELS}


@dataclass(frozen=True)
class Coordinate:
    """A labelled point: where on which instance a reader saw a condition at a level."""

    study_id: str
    series_id: str
    instance_number: int
    condition: Condition
    level: Level
    x: float
    y: float

    def row(self) -> list[str]:
        return [self.study_id, self.series_id, str(self.instance_number),
                condition_title(self.condition), level_name(self.level), _num(self.x), _num(self.y)]


@dataclass
class CompetitionStudy:
    """One study as the layout describes it; `images` maps series -> instance -> file."""

    study_id: str
    series: dict[str, str] = field(default_factory=dict)  # series_id -> description
    grades: dict[Cell, Grade] = field(default_factory=dict)  # missing cell: not graded
    coordinates: list[Coordinate] = field(default_factory=list)
    images: dict[str, dict[int, Path]] = field(default_factory=dict)


def _num(value: float) -> str:
    return f"{value:.6g}"


# --- writing ------------------------------------------------------------------------------


def write_split(root: Path, studies: Iterable[CompetitionStudy], prefix: str = "train",
                link: bool = False) -> Path:
    """Write one split (released or holdout) in the competition layout under `root`.

    `link=True` hard-links images instead of copying (same filesystem only; falls back to copy).
    """
    studies = list(studies)
    root.mkdir(parents=True, exist_ok=True)
    for name, data in split_csvs(studies, prefix).items():
        (root / name).write_bytes(data)
    for study in studies:
        for series_id, instances in study.images.items():
            for number, source in instances.items():
                target = root / image_path(prefix, study.study_id, series_id, number)
                target.parent.mkdir(parents=True, exist_ok=True)
                _place(Path(source), target, link)
    return root


def split_csvs(studies: Iterable[CompetitionStudy], prefix: str = "train") -> dict[str, bytes]:
    """The three CSV files of one split, as bytes (the consensus service writes them to the
    object store; `write_split` to disk): same studies, same bytes."""
    studies = list(studies)
    return {f"{prefix}.csv": _csv_bytes(TRAIN_COLUMNS, (_train_row(s) for s in studies)),
            f"{prefix}_label_coordinates.csv": _csv_bytes(
                COORDINATE_COLUMNS, (c.row() for s in studies for c in s.coordinates)),
            f"{prefix}_series_descriptions.csv": _csv_bytes(
                SERIES_COLUMNS, ([s.study_id, sid, desc] for s in studies for sid, desc in s.series.items()))}


def image_path(prefix: str, study_id: str, series_id: str, instance_number: int) -> str:
    """`<prefix>_images/<study_id>/<series_id>/<instance_number>.dcm`, relative to the root."""
    return f"{prefix}_images/{study_id}/{series_id}/{instance_number}.dcm"


def _csv_bytes(header: Iterable[str], rows: Iterable[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8")


def export_splits(out_dir: Path, released: Iterable[CompetitionStudy],
                  holdout: Iterable[CompetitionStudy]) -> dict[str, Path]:
    """`<out>/released/` and `<out>/holdout/`, each a complete competition-layout root."""
    return {"released": write_split(out_dir / "released", released),
            "holdout": write_split(out_dir / "holdout", holdout)}


def _train_row(study: CompetitionStudy) -> list[str]:
    grades = [study.grades.get((c, lv)) for c in CONDITIONS for lv in LEVELS]
    return [study.study_id, *(g.value if g else "" for g in grades)]


def _write_csv(path: Path, header: Iterable[str], rows: Iterable[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _place(source: Path, target: Path, link: bool) -> None:
    if target.exists():
        target.unlink()
    if link:
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copyfile(source, target)


# --- reading ------------------------------------------------------------------------------


class LayoutError(ValueError):
    """The folder is not in the competition layout; the message says what is wrong where."""


def read_split(root: Path, prefix: str = "train") -> list[CompetitionStudy]:
    """Studies of a competition-layout root: series and images always, grades and
    coordinates when `<prefix>.csv` / `<prefix>_label_coordinates.csv` exist."""
    studies: dict[str, CompetitionStudy] = {}
    for row in _read_csv(root / f"{prefix}_series_descriptions.csv", SERIES_COLUMNS):
        study = studies.setdefault(row["study_id"], CompetitionStudy(row["study_id"]))
        study.series[row["series_id"]] = row["series_description"]
        study.images[row["series_id"]] = _instances(
            root / f"{prefix}_images" / row["study_id"] / row["series_id"])
    if (root / f"{prefix}.csv").exists():
        for (study_id, cell), grade in read_train_csv(root / f"{prefix}.csv").items():
            if study_id in studies:
                studies[study_id].grades[cell] = grade
    coordinates = root / f"{prefix}_label_coordinates.csv"
    if coordinates.exists():
        for c in read_coordinates(coordinates):
            if c.study_id in studies:
                studies[c.study_id].coordinates.append(c)
    return list(studies.values())


def read_train_csv(path: Path) -> dict[tuple[str, Cell], Grade]:
    """{(study_id, (condition, level)): grade} for every graded cell (lumbar.scoring's parser)."""
    try:
        truth = truth_from_train_csv(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise LayoutError(f"{path}: {exc}") from None
    result = {}
    for rid, grade in truth.items():
        study_id, condition, level = split_row_id(rid)
        result[(study_id, (condition, level))] = grade
    return result


def read_coordinates(path: Path) -> list[Coordinate]:
    result = []
    for n, row in enumerate(_read_csv(path, COORDINATE_COLUMNS), start=2):
        try:
            result.append(Coordinate(row["study_id"], row["series_id"],
                                     int(float(row["instance_number"])),
                                     _TITLES[row["condition"]], _LEVEL_NAMES[row["level"]],
                                     float(row["x"]), float(row["y"])))
        except (KeyError, ValueError) as exc:
            raise LayoutError(f"{path} line {n}: bad value ({exc})") from None
    return result


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.exists():
        raise LayoutError(f"{path} not found")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise LayoutError(f"{path}: missing column(s) {', '.join(missing)}")
        return [{k: (v or "").strip() for k, v in row.items()} for row in reader]


def _instances(folder: Path) -> dict[int, Path]:
    """Instance number -> file, ordered by number ("10.dcm" after "9.dcm")."""
    if not folder.is_dir():
        return {}
    files = [p for p in folder.glob("*.dcm") if p.stem.isdigit()]
    return {int(p.stem): p for p in sorted(files, key=lambda p: int(p.stem))}


# --- import into the ingest layout --------------------------------------------------------


@dataclass
class ImportSummary:
    imported: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (study_id, why)


def prior_report(study: CompetitionStudy) -> str:
    """The prior grades as a level-by-level report, which the lumbar extractor reads back
    exactly, so prior labels reach readers as ordinary suggestions."""
    if not study.grades:
        return NO_PRIOR_REPORT
    lines = ["PRIOR GRADES (imported):"]
    for level in LEVELS:
        graded = [(c, study.grades[(c, level)]) for c in CONDITIONS if (c, level) in study.grades]
        if graded:
            findings = "; ".join(f"{g.value.split('/')[-1].lower()} {condition_title(c).lower()}"
                                 for c, g in graded)
            lines.append(f"{level_name(level)}: {findings}.")
    return "\n".join(lines)


def import_competition(root: Path, out_dir: Path, prefix: str = "train",
                       link: bool = True) -> ImportSummary:
    """Write a competition-layout dataset as `radcurate ingest` input under `out_dir`:
    reports.csv (patient_id = study_id: the competition has one study per patient),
    dicom/<study_id>/<series_id>/<n>.dcm, series.csv, and priors.jsonl (grades, points)."""
    summary = ImportSummary()
    rows, priors = [], []
    for study in read_split(root, prefix):
        if problem := _problem(study):
            summary.refused.append((study.study_id, problem))
            continue
        for series_id, instances in study.images.items():
            folder = out_dir / "dicom" / study.study_id / series_id
            folder.mkdir(parents=True, exist_ok=True)
            for number, source in instances.items():
                _place(source, folder / f"{number}.dcm", link)
        rows.append([study.study_id, study.study_id, prior_report(study)])
        priors.append(_prior_record(study))
        summary.imported.append(study.study_id)
    _write_csv(out_dir / "reports.csv", ("study_id", "patient_id", "report"), rows)
    _write_csv(out_dir / "series.csv", SERIES_COLUMNS,
               ([p["study_id"], sid, d] for p in priors for sid, d in p["series"].items()))
    with (out_dir / "priors.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(p) + "\n" for p in priors)
    return summary


def _problem(study: CompetitionStudy) -> str | None:
    empty = [sid for sid, files in study.images.items() if not files]
    return f"series without images: {', '.join(empty)}" if empty else None


def _prior_record(study: CompetitionStudy) -> dict:
    return {"study_id": study.study_id, "series": study.series,
            "grades": {cell_id(c, lv): g.value for (c, lv), g in study.grades.items()},
            "coordinates": [dict(zip(COORDINATE_COLUMNS, c.row(), strict=True)) for c in study.coordinates]}


def grades_of(record: Mapping[str, str]) -> dict[Cell, Grade]:
    """Inverse of the `grades` mapping in priors.jsonl / truth.jsonl."""
    return {split_row_id(f"x_{cell}")[1:]: Grade(g) for cell, g in record.items()}
