"""A curator's ruling on a lumbar study: the disputed cells graded (and pointed) by hand.

A study whose readers are two grades apart at a cell is held by the rule; the curator who looks
at it sets those cells' grades, and the point where the finding is seen. The ruling is recorded
next to the rule's decision (never over it): the study's cells are the rule's, with the
curator's cells in their place, marked `adjudicated`. A cell the curator leaves alone keeps the
rule's grade and keeps its flag, so the trail shows which disputes were settled by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

from services.common.contracts import CellGrade
from services.common.protocols import JudgementRejected
from services.common.protocols.lumbar.grid import Grade
from services.common.protocols.lumbar.review import check_cells

ADJUDICATED = "adjudicated"  # CellConsensus.method of a cell a curator set
_CELLS = TypeAdapter(list[CellGrade])


def adjudicate_cells(accepted: bool, labels: Sequence[str], cells: Sequence[Mapping[str, Any]],
                     decided_cells: Sequence[Mapping[str, Any]] | None,
                     instances: set[tuple[str, int]] | None) -> tuple[list[str], list[dict[str, Any]] | None]:
    """The findings and cells the ruling releases (raises `JudgementRejected`): `cells` checked
    (known cells, once each, known grades, points on the study's instances) and merged into the
    rule's `decided_cells`; with no decided cells (the gateway's check) the curator's cells alone."""
    if labels:
        raise JudgementRejected("a lumbar adjudication sets `cells` (grade and point per disputed cell); "
                                "its findings follow from the grades, so send no `labels`")
    try:
        graded = _CELLS.validate_python(list(cells))
    except ValidationError as exc:
        raise JudgementRejected(f"not a list of graded cells: {exc.errors()[0]['msg']}") from None
    check_cells(graded, instances)
    if graded and not accepted:
        raise JudgementRejected("a rejected study enters no benchmark: send accepted=true with cells, or no cells")
    if not accepted:
        return [], None
    ruled = {g.cell_id: g for g in graded}
    merged = []
    for cell in decided_cells or [{"cell_id": g.cell_id} for g in graded]:
        g = ruled.get(cell["cell_id"])
        if g is None:
            merged.append(dict(cell))
            continue
        point = g.point.model_dump(mode="json") if g.point else cell.get("point")
        merged.append({"cell_id": g.cell_id, "grade": g.grade, "method": ADJUDICATED, "adjudicate": False,
                       "point": point})
    return findings(merged), merged


def findings(cells: Sequence[Mapping[str, Any]]) -> list[str]:
    """A study's findings (`<cell>:<grade>` for cells above Normal/Mild): its labels for selection."""
    return sorted(f"{c['cell_id']}:{c['grade']}" for c in cells if c["grade"] != Grade.NORMAL_MILD.value)
