"""What a lumbar reader submits: a grade (and optionally a point) for every condition x level."""

from __future__ import annotations

from typing import Literal

from services.common.contracts import CellGrade, Judgement

NAME = "lumbar-grading"


class GradeGrid(Judgement):
    """One grade per cell of the 25-cell grid, each with the point where the reader saw it."""

    protocol: Literal["lumbar-grading"] = NAME
    grades: list[CellGrade]
