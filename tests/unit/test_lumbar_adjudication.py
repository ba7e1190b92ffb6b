"""A curator's grades for a held lumbar study's disputed cells (issue 12 §3): pure rules."""

from __future__ import annotations

import pytest

from services.common import protocols
from services.common.protocols import JudgementRejected
from services.common.protocols.lumbar.adjudication import ADJUDICATED, adjudicate_cells
from services.common.protocols.lumbar.grid import CELL_IDS

DISPUTED = "spinal_canal_stenosis_l4_l5"
INSTANCES = {("1.2.3", 7), ("1.2.3", 8)}
POINT = {"series_instance_uid": "1.2.3", "instance_number": 8, "x": 40.0, "y": 52.5}


def decided() -> list[dict]:
    """The rule's cells: all Normal/Mild, one Moderate, one held (two grades apart, median Moderate)."""
    cells = [{"cell_id": c, "grade": "Normal/Mild", "method": "majority", "adjudicate": False, "point": None}
             for c in CELL_IDS]
    cells[1] = {**cells[1], "grade": "Moderate"}
    i = CELL_IDS.index(DISPUTED)
    cells[i] = {**cells[i], "grade": "Moderate", "method": "median", "adjudicate": True,
                "point": {"series_instance_uid": "1.2.3", "instance_number": 7, "x": 10.0, "y": 11.0}}
    return cells


def test_the_curators_grade_and_point_replace_the_rules_for_that_cell_only():
    labels, cells = adjudicate_cells(True, [], [{"cell_id": DISPUTED, "grade": "Severe", "point": POINT}],
                                     decided(), INSTANCES)
    by_cell = {c["cell_id"]: c for c in cells}
    assert len(cells) == 25 and [c["cell_id"] for c in cells] == list(CELL_IDS)
    assert by_cell[DISPUTED] == {"cell_id": DISPUTED, "grade": "Severe", "method": ADJUDICATED,
                                 "adjudicate": False, "point": POINT}
    assert by_cell[CELL_IDS[1]] == decided()[1]  # untouched cells keep the rule's decision
    assert labels == sorted([f"{CELL_IDS[1]}:Moderate", f"{DISPUTED}:Severe"])


def test_a_cell_graded_without_a_point_keeps_the_rules_averaged_point():
    _, cells = adjudicate_cells(True, [], [{"cell_id": DISPUTED, "grade": "Normal/Mild"}], decided(), INSTANCES)
    cell = next(c for c in cells if c["cell_id"] == DISPUTED)
    assert cell["grade"] == "Normal/Mild" and cell["point"]["instance_number"] == 7


def test_a_held_cell_the_curator_leaves_alone_keeps_its_median_and_its_flag():
    labels, cells = adjudicate_cells(True, [], [], decided(), INSTANCES)
    assert cells == decided() and f"{DISPUTED}:Moderate" in labels


def test_a_rejection_releases_nothing():
    assert adjudicate_cells(False, [], [], decided(), INSTANCES) == ([], None)


@pytest.mark.parametrize(("accepted", "labels", "cells", "says"), [
    (True, [], [{"cell_id": "tail_l4_l5", "grade": "Severe"}], "unknown cell(s): tail_l4_l5"),
    (True, [], [{"cell_id": DISPUTED, "grade": "Awful"}], "unknown grade(s) Awful"),
    (True, [], [{"cell_id": DISPUTED, "grade": "Severe"}, {"cell_id": DISPUTED, "grade": "Moderate"}], "graded twice"),
    (True, [], [{"cell_id": DISPUTED, "grade": "Severe", "point": {**POINT, "instance_number": 99}}],
     "which this study does not have"),
    (True, [], [{"cell_id": DISPUTED}], "not a list of graded cells"),
    (True, [DISPUTED], [], "send no `labels`"),
    (False, [], [{"cell_id": DISPUTED, "grade": "Severe"}], "a rejected study enters no benchmark"),
])
def test_a_bad_ruling_is_refused_naming_the_problem(accepted, labels, cells, says):
    with pytest.raises(JudgementRejected) as err:
        adjudicate_cells(accepted, labels, cells, decided(), INSTANCES)
    assert says in err.value.detail


def test_the_gateway_checks_without_the_rules_cells_and_points_without_instances_are_not_checked():
    labels, cells = protocols.get("lumbar-grading").adjudicate(
        True, [], [{"cell_id": DISPUTED, "grade": "Severe", "point": {**POINT, "instance_number": 99}}], None, None)
    assert [c["cell_id"] for c in cells] == [DISPUTED] and labels == [f"{DISPUTED}:Severe"]


def test_a_label_protocols_adjudication_refuses_cells_and_unknown_labels():
    cxr = protocols.get("cxr-label-verification")
    with pytest.raises(JudgementRejected, match="not `cells`"):
        cxr.adjudicate(True, [], [{"cell_id": DISPUTED, "grade": "Severe"}], None)
    with pytest.raises(JudgementRejected, match="unknown label"):
        cxr.adjudicate(True, ["dragon"], [], None)
    assert cxr.adjudicate(True, ["pneumothorax", "cardiomegaly", "pneumothorax"], [], None) == (
        ["cardiomegaly", "pneumothorax"], None)
    assert cxr.adjudicate(False, ["pneumothorax"], [], None) == ([], None)
