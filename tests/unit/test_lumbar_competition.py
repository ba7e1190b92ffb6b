"""Competition layout: exact columns, a lossless round trip, import into the ingest layout."""

import csv

import pytest

from radcurate.bulk_ingest import read_reports, study_files
from services.common.protocols.lumbar.competition import (
    COORDINATE_COLUMNS,
    NO_PRIOR_REPORT,
    SERIES_COLUMNS,
    TRAIN_COLUMNS,
    CompetitionStudy,
    Coordinate,
    LayoutError,
    condition_title,
    export_splits,
    import_competition,
    level_name,
    prior_report,
    read_split,
)
from services.common.protocols.lumbar.extract import extract_lumbar_grades
from services.common.protocols.lumbar.grid import CONDITIONS, LEVELS, Condition, Grade, Level
from services.common.protocols.lumbar.mapping import grade_grid, suggest_grades
from services.common.taxonomy import load_taxonomy


def _study(tmp_path, study_id="42", graded=True):
    images = {}
    for series in ("7", "8"):
        folder = tmp_path / "src" / study_id / series
        folder.mkdir(parents=True)
        for n in (1, 2, 10):
            (folder / f"{n}.dcm").write_bytes(f"{study_id}/{series}/{n}".encode())
        images[series] = {n: folder / f"{n}.dcm" for n in (1, 2, 10)}
    grades = {(c, lv): Grade.NORMAL_MILD for c in CONDITIONS for lv in LEVELS} if graded else {}
    if graded:
        grades[(Condition.SPINAL_CANAL_STENOSIS, Level.L4_L5)] = Grade.SEVERE
        del grades[(Condition.LEFT_SUBARTICULAR_STENOSIS, Level.L1_L2)]  # not graded
    points = [Coordinate(study_id, "8", 2, Condition.SPINAL_CANAL_STENOSIS, Level.L4_L5, 31.5, 60.25)]
    return CompetitionStudy(study_id, {"7": "Sagittal T1", "8": "Sagittal T2/STIR"}, grades,
                            points if graded else [], images)


def _header(path):
    with path.open(newline="") as f:
        return tuple(next(csv.reader(f)))


def test_titles_and_level_names_are_the_competition_spelling():
    assert condition_title(Condition.LEFT_NEURAL_FORAMINAL_NARROWING) == "Left Neural Foraminal Narrowing"
    assert level_name(Level.L5_S1) == "L5/S1"


def test_exported_splits_have_the_exact_columns_and_images(tmp_path):
    roots = export_splits(tmp_path / "out", [_study(tmp_path)], [_study(tmp_path, "43")])
    released = roots["released"]
    assert _header(released / "train.csv") == TRAIN_COLUMNS
    assert TRAIN_COLUMNS[1:3] == ("spinal_canal_stenosis_l1_l2", "spinal_canal_stenosis_l2_l3")
    assert _header(released / "train_label_coordinates.csv") == COORDINATE_COLUMNS
    assert _header(released / "train_series_descriptions.csv") == SERIES_COLUMNS
    assert (released / "train_images/42/8/10.dcm").read_bytes() == b"42/8/10"
    assert not (released / "train_images/43").exists()
    assert (roots["holdout"] / "train_images/43/7/1.dcm").exists()
    coordinates = (released / "train_label_coordinates.csv").read_text().splitlines()
    assert coordinates[1] == "42,8,2,Spinal Canal Stenosis,L4/L5,31.5,60.25"


def test_a_written_split_reads_back_unchanged(tmp_path):
    study = _study(tmp_path)
    roots = export_splits(tmp_path / "out", [study], [])
    [back] = read_split(roots["released"])
    assert back.grades == study.grades and back.coordinates == study.coordinates
    assert back.series == study.series
    assert list(back.images["7"]) == [1, 2, 10]  # numeric instance order


def test_empty_cells_stay_ungraded(tmp_path):
    roots = export_splits(tmp_path / "out", [_study(tmp_path)], [])
    row = (roots["released"] / "train.csv").read_text().splitlines()[1].split(",")
    assert row[TRAIN_COLUMNS.index("left_subarticular_stenosis_l1_l2")] == ""


def test_import_writes_the_ingest_layout_with_priors_as_a_report(tmp_path):
    roots = export_splits(tmp_path / "out", [_study(tmp_path), _study(tmp_path, "43", graded=False)], [])
    summary = import_competition(roots["released"], tmp_path / "ingest")
    assert summary.imported == ["42", "43"] and not summary.refused
    reports = {r["study_id"]: r for r in read_reports(tmp_path / "ingest")}
    assert reports["43"]["report"] == NO_PRIOR_REPORT and reports["42"]["patient_id"] == "42"
    assert sorted(name for name, _ in study_files(tmp_path / "ingest", "42"))[:2] == ["7/1.dcm", "7/10.dcm"]
    assert (tmp_path / "ingest" / "priors.jsonl").read_text().count("\n") == 2


def test_the_prior_report_reads_back_as_the_prior_grades():
    study = CompetitionStudy("1", grades={(c, lv): g for (c, lv), g in zip(
        [(c, lv) for c in CONDITIONS for lv in LEVELS], list(Grade) * 9, strict=False)})
    taxonomy = load_taxonomy("lumbar")
    grid = grade_grid(suggest_grades(extract_lumbar_grades(prior_report(study), taxonomy)))
    assert all(grid[f"{c.value}_{lv.value}"] is g for (c, lv), g in study.grades.items())


def test_a_missing_series_file_is_a_layout_error(tmp_path):
    with pytest.raises(LayoutError, match="train_series_descriptions.csv not found"):
        read_split(tmp_path)
