"""The lumbar protocol's wiring: vote contracts, sampling strata, gateway vote checks, the
consensus decision from stored votes, the competition-layout release and the simulated reader."""

from __future__ import annotations

import csv
import io
import json
import random

import pytest
from pydantic import ValidationError

from radcurate.simulate_lumbar import LumbarTruth, grade_study, perturb
from services.common.contracts import (
    CellGrade,
    ConsensusReached,
    LabelsSuggested,
    ModelProvenance,
    Protocol,
    SamplingPlan,
    SuggestedLabel,
    VoteCast,
    parse_event,
)
from services.common.protocols import JudgementRejected
from services.common.protocols.kit.rule_config import rule_for
from services.common.protocols.lumbar.competition import TRAIN_COLUMNS
from services.common.protocols.lumbar.consensus import decide_lumbar, lumbar_agreement_report
from services.common.protocols.lumbar.grid import CELL_IDS
from services.common.protocols.lumbar.judgement import GradeGrid
from services.common.protocols.lumbar.release import compose_lumbar_release
from services.common.protocols.lumbar.review import check_grades, grid_view
from services.common.protocols.lumbar.sampling import LumbarStratum, draw_lumbar_sample, grid_candidate

LUMBAR = Protocol.LUMBAR
SCS45 = "spinal_canal_stenosis_l4_l5"
SERIES = "1.2.3.4"


def _grid(**overrides: str) -> list[dict]:
    return [{"cell_id": c, "grade": overrides.get(c, "Normal/Mild")} for c in CELL_IDS]


# --- contracts ----------------------------------------------------------------------------


def test_a_lumbar_vote_carries_grades_and_a_cxr_vote_a_verdict():
    common = dict(study_id="s", vote_id="v", assignment_id="a", reader_id="r")
    vote = VoteCast(protocol=LUMBAR, judgement=GradeGrid(grades=[CellGrade(cell_id=SCS45, grade="Severe")]), **common)
    assert parse_event(json.loads(vote.model_dump_json())) == vote
    with pytest.raises(ValidationError):
        VoteCast(protocol=LUMBAR, judgement={"protocol": LUMBAR, "verdict": "agree_all"}, **common)
    with pytest.raises(ValidationError):
        VoteCast(judgement={"protocol": LUMBAR, "grades": []}, **common)  # no protocol: no default either
    old_cxr = {"event_type": "VoteCast", "schema_version": 1, "verdict": "agree_all", **common}
    assert parse_event(old_cxr).judgement.verdict == "agree_all"


def test_an_old_consensus_event_reads_with_no_cells():
    raw = {"event_type": "ConsensusReached", "study_id": "s", "accepted": True, "rule": "r", "rule_version": "1",
           "labels": [], "vote_ids": []}
    assert parse_event(raw).cells == []
    assert ConsensusReached.model_fields["schema_version"].default == 2  # protocol required since 2


# --- sampling -----------------------------------------------------------------------------


def _suggestion(study_id: str, **grades: str) -> LabelsSuggested:
    prov = ModelProvenance(backend="rules")
    labels = [SuggestedLabel(label_id=c, grade=grades.get(c, "Normal/Mild")) for c in CELL_IDS]
    return LabelsSuggested(study_id=study_id, patient_id=f"p-{study_id}", protocol=LUMBAR,
                           taxonomy_version="lumbar-v1", labels=labels, extraction=prov, mapping=prov)


def test_strata_come_from_the_worst_suggested_grade():
    assert grid_candidate(_suggestion("a", **{SCS45: "Severe"})).stratum is LumbarStratum.ANY_SEVERE
    assert grid_candidate(_suggestion("b", **{SCS45: "Moderate"})).stratum is LumbarStratum.ANY_MODERATE
    assert grid_candidate(_suggestion("c")).stratum is LumbarStratum.ALL_NORMAL_MILD


def test_rare_findings_come_first_and_normals_keep_their_share():
    rare = "left_subarticular_stenosis_l1_l2"
    pool = [_suggestion(f"common-{i}", **{SCS45: "Moderate"}) for i in range(20)]
    pool += [_suggestion("rare", **{rare: "Severe"})] + [_suggestion(f"normal-{i}") for i in range(10)]
    plan = SamplingPlan(n=10, no_finding_share=0.2, seed=1)
    result = draw_lumbar_sample([grid_candidate(s) for s in pool], plan)
    ids = {s.study_id for s in result.selected}
    assert "rare" in ids and len(ids) == 10
    assert sum(s.stratum == LumbarStratum.ALL_NORMAL_MILD for s in result.selected) == 2
    assert result == draw_lumbar_sample([grid_candidate(s) for s in reversed(pool)], plan)


# --- gateway checks -----------------------------------------------------------------------


def test_the_grid_view_has_every_cell_prefilled_and_marks_silent_cells():
    grid = grid_view([{"label_id": SCS45, "grade": "Severe", "confidence": 0.9, "evidence": ["severe stenosis"]}])
    assert [c["cell_id"] for c in grid] == list(CELL_IDS)
    cell = next(c for c in grid if c["cell_id"] == SCS45)
    assert cell["grade"] == "Severe" and not cell["silent"]
    assert all(c["silent"] and c["grade"] == "Normal/Mild" for c in grid if c["cell_id"] != SCS45)


@pytest.mark.parametrize("grades, message", [
    (_grid()[:-1], "missing"), ([*_grid(), {"cell_id": SCS45, "grade": "Severe"}], "twice"),
    ([*_grid()[:-1], {"cell_id": "tail_l1_l2", "grade": "Severe"}], "unknown cell"),
    ([{**_grid()[0], "grade": "Bad"}, *_grid()[1:]], "unknown grade"),
    ([{**_grid()[0], "point": {"series_instance_uid": SERIES, "instance_number": 99, "x": 1, "y": 2}},
      *_grid()[1:]], "does not have")])
def test_a_vote_must_grade_each_known_cell_once_with_points_on_known_instances(grades, message):
    with pytest.raises(JudgementRejected) as err:
        check_grades([CellGrade.model_validate(g) for g in grades], {(SERIES, 1)})
    assert message in err.value.detail


# --- consensus ----------------------------------------------------------------------------


def _vote(reader: str, grade: str, x: float | None = None) -> dict:
    grid = _grid(**{SCS45: grade})
    if x is not None:
        grid = [{**g, "point": {"series_instance_uid": SERIES, "instance_number": 6, "x": x, "y": 10.0}}
                if g["cell_id"] == SCS45 else g for g in grid]
    return {"vote_id": f"v-{reader}", "reader_id": reader, "grades": grid}


OBJECTS = [{"series_instance_uid": SERIES, "pixel_spacing": [2.0, 0.5]}]


def test_a_study_decision_has_a_grade_per_cell_and_points_averaged_in_mm():
    votes = [_vote("r1", "Severe", 10.0), _vote("r2", "Severe", 20.0), _vote("r3", "Moderate", 90.0)]
    decision, cells = decide_lumbar("s", votes, OBJECTS, rule_for(LUMBAR))
    assert decision.accepted and decision.labels == (f"{SCS45}:Severe",) and len(cells) == 25
    cell = next(c for c in cells if c.cell_id == SCS45)
    assert cell.grade == "Severe" and cell.method == "majority" and cell.point.x == 15.0


def test_readers_two_grades_apart_hold_the_study_for_adjudication():
    votes = [_vote("r1", "Severe"), _vote("r2", "Normal/Mild"), _vote("r3", "Moderate")]
    decision, cells = decide_lumbar("s", votes, OBJECTS, rule_for(LUMBAR))
    assert not decision.accepted and decision.needs_adjudication and SCS45 in decision.reason
    assert next(c for c in cells if c.cell_id == SCS45).method == "median"


def test_the_agreement_report_has_kappa_per_condition_and_level_and_point_distance():
    votes = [{**_vote(r, g, x), "study_id": sid} for sid in ("a", "b")
             for r, g, x in (("r1", "Severe", 10.0), ("r2", "Moderate", 14.0))]
    report = lumbar_agreement_report([{"study_id": s, "objects": OBJECTS} for s in ("a", "b")], votes)
    assert set(report["qwk_by_level"]) == {"l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"}
    assert report["qwk_by_cell"][SCS45]["mean_point_distance_mm"] == 2.0  # 4 px x 0.5 mm columns
    json.dumps(report, allow_nan=False)


# --- release ------------------------------------------------------------------------------


def _row(i: int) -> dict:
    _, cells = decide_lumbar(f"s{i}", [_vote("r1", "Severe", 10.0)], OBJECTS, rule_for(LUMBAR))
    obj = {"series_instance_uid": SERIES, "series_description": "Sagittal T2/STIR", "instance_number": 6,
           "sop_instance_uid": f"1.9.{i}", "sha256": "ab" * 32, "object_key": f"sha256/{i}"}
    return {"study_id": f"s{i}", "patient_id": f"p{i}", "labels": [f"{SCS45}:Severe"], "objects": [obj],
            "cells": [c.model_dump(mode="json") for c in cells]}


def test_a_lumbar_release_is_in_the_competition_layout_split_by_patient():
    from services.common.contracts import SelectionPlan

    composed = compose_lumbar_release("r1", LUMBAR, [_row(i) for i in range(8)], SelectionPlan(target_size=8),
                                      {}, rule_for(LUMBAR), {"mean_qwk": 0.8})
    files = {k: v for (_, k), v in composed.files.files.items()}
    train = files["releases/r1/train.csv"].decode()
    assert tuple(next(csv.reader(io.StringIO(train)))) == TRAIN_COLUMNS
    assert "releases/r1/holdout/train_label_coordinates.csv" in files
    assert ("holdout", "releases/r1/holdout/train.csv") in composed.files.files
    assert {s.patient_id for s in composed.released}.isdisjoint({s.patient_id for s in composed.holdout})
    assert any(dst.endswith(f"train_images/s0/{SERIES}/6.dcm") for _, _, dst in composed.files.copies)
    card = json.loads(files["releases/r1/dataset_card.json"])
    assert card["counts"]["released"] + card["counts"]["holdout"] == 8
    assert card["deidentification"]["profile"] == "Basic Application Level Confidentiality Profile"


# --- simulated reader ---------------------------------------------------------------------


def test_a_simulated_reader_slips_one_grade_and_points_near_the_truth():
    rng = random.Random(0)
    assert {perturb("Normal/Mild", 1.0, rng) for _ in range(20)} == {"Moderate"}
    assert {perturb("Moderate", 1.0, rng) for _ in range(50)} == {"Normal/Mild", "Severe"}
    assert perturb("Severe", 0.0, rng) == "Severe"
    truth = LumbarTruth({SCS45: "Severe"}, ({"series_id": "100", "instance_number": 6, "condition":
                                            "spinal_canal_stenosis", "level": "l4_l5", "x": 50.0, "y": 40.0},),
                        {"100": "Sagittal T2/STIR"})
    [read] = grade_study(truth, [{"series_description": "Sagittal T2/STIR", "series_instance_uid": SERIES}], 0.0, rng)
    assert read["grade"] == "Severe" and read["point"]["series_instance_uid"] == SERIES
    assert abs(read["point"]["x"] - 50) < 6 and read["point"]["instance_number"] == 6


def test_ingest_records_pixel_spacing_and_leaves_it_empty_when_absent(tmp_path):
    from radcurate.synth.lumbar import synth_lumbar
    from services.gateway.ingest import parse_instance
    from tests.support.factories import dicom_bytes

    synth_lumbar(1, 0, tmp_path / "mr")
    mr = next((tmp_path / "mr" / "dicom").rglob("*.dcm")).read_bytes()
    assert parse_instance("mr.dcm", mr, scrub=False)[0].obj.pixel_spacing in {(2.6, 2.6), (3.0, 3.0)}
    cxr = parse_instance("cxr.dcm", dicom_bytes(tmp_path, "CXR-1"), scrub=False)[0]
    assert cxr.obj.pixel_spacing is None or len(cxr.obj.pixel_spacing) == 2
