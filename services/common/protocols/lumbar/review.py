"""The lumbar grading task at the gateway: the grid a reader starts from, and what a vote must be.

A lumbar read is a grade for every one of the 25 condition x level cells (never a partial grid:
an ungraded cell would be indistinguishable from a forgotten one), each optionally with the
point on an instance where the finding is seen. Points are image pixel coordinates, checked
against the study's own series and instances, so consensus can average them in millimetres.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.common.contracts import CellGrade, SuggestedLabel
from services.common.protocols import JudgementRejected
from services.common.protocols.lumbar.grid import CELL_IDS, GRADE_ORDER, cell_of

GRADES = tuple(g.value for g in GRADE_ORDER)


def grid_view(suggested: Sequence[dict]) -> list[dict]:
    """The 25-cell grid, prefilled from the suggestion: a cell the report never mentions is
    marked `silent` (Normal/Mild by default), a hedged one `uncertain`, so the page can show
    which grades the report supports."""
    by_cell = {s["label_id"]: SuggestedLabel.model_validate(s) for s in suggested}
    grid = []
    for cell_id in CELL_IDS:
        condition, level = cell_of(cell_id)
        s = by_cell.get(cell_id)
        grid.append({"cell_id": cell_id, "condition": condition.value, "level": level.value,
                     "grade": (s.grade if s and s.grade else GRADES[0]),
                     "confidence": s.confidence if s else 0.0, "uncertain": bool(s and s.uncertain),
                     "silent": not (s and s.evidence), "evidence": list(s.evidence) if s else []})
    return grid


def check_grades(grades: Sequence[CellGrade], instances: set[tuple[str, int]]) -> None:
    """Refuse (`JudgementRejected`: a 422 at the gateway) anything but exactly one known grade per
    known cell, with points only on instances of this study. `instances` is the study's
    (series_instance_uid, instance_number)."""
    _check_cell_ids(grades)
    missing = [c for c in CELL_IDS if c not in {g.cell_id for g in grades}]
    if missing:
        raise JudgementRejected(f"grade every cell: {len(missing)} missing, e.g. {missing[0]}", missing_cells=missing)
    _check_grades_and_points(grades, instances)


def check_cells(grades: Sequence[CellGrade], instances: set[tuple[str, int]] | None) -> None:
    """Like `check_grades` for some cells only (a curator's adjudication of the disputed ones);
    points are checked when the study's instances are known."""
    _check_cell_ids(grades)
    _check_grades_and_points(grades, instances)


def _check_cell_ids(grades: Sequence[CellGrade]) -> None:
    ids = [g.cell_id for g in grades]
    unknown = sorted(set(ids) - set(CELL_IDS))
    if unknown:
        raise JudgementRejected(f"unknown cell(s): {', '.join(unknown)}", unknown_cells=unknown)
    twice = sorted({c for c in ids if ids.count(c) > 1})
    if twice:
        raise JudgementRejected(f"cell(s) graded twice: {', '.join(twice)}")


def _check_grades_and_points(grades: Sequence[CellGrade], instances: set[tuple[str, int]] | None) -> None:
    bad = sorted({g.grade for g in grades} - set(GRADES))
    if bad:
        raise JudgementRejected(f"unknown grade(s) {', '.join(bad)}; known: {', '.join(GRADES)}")
    for g in grades:
        if (instances is not None and g.point
                and (g.point.series_instance_uid, g.point.instance_number) not in instances):
            raise JudgementRejected(f"{g.cell_id}: the point is on instance {g.point.instance_number} of series "
                               f"{g.point.series_instance_uid!r}, which this study does not have")
