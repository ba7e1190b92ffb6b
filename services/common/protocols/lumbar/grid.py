"""The lumbar grading grid's defined terms, shared by every service that touches the protocol.

Five conditions x five disc levels, each graded Normal/Mild, Moderate or Severe (the RSNA
LumbarDISC / RSNA 2024 competition grid). `<condition>_<level>` is a cell id and the
competition's `train.csv` column name.
"""

from __future__ import annotations

from enum import Enum, StrEnum


class Group(StrEnum):
    """The condition groups that each get their own log loss."""

    SPINAL = "spinal"
    FORAMINAL = "foraminal"
    SUBARTICULAR = "subarticular"


class Condition(StrEnum):
    SPINAL_CANAL_STENOSIS = "spinal_canal_stenosis"
    LEFT_NEURAL_FORAMINAL_NARROWING = "left_neural_foraminal_narrowing"
    RIGHT_NEURAL_FORAMINAL_NARROWING = "right_neural_foraminal_narrowing"
    LEFT_SUBARTICULAR_STENOSIS = "left_subarticular_stenosis"
    RIGHT_SUBARTICULAR_STENOSIS = "right_subarticular_stenosis"

    @property
    def group(self) -> Group:
        if self is Condition.SPINAL_CANAL_STENOSIS:
            return Group.SPINAL
        return Group.FORAMINAL if "foraminal" in self.value else Group.SUBARTICULAR


class Level(StrEnum):
    L1_L2 = "l1_l2"
    L2_L3 = "l2_l3"
    L3_L4 = "l3_l4"
    L4_L5 = "l4_l5"
    L5_S1 = "l5_s1"


class Grade(Enum):
    NORMAL_MILD = "Normal/Mild"
    MODERATE = "Moderate"
    SEVERE = "Severe"

    @property
    def weight(self) -> int:
        """Sample weight of a row with this true grade."""
        return {Grade.NORMAL_MILD: 1, Grade.MODERATE: 2, Grade.SEVERE: 4}[self]

    @property
    def index(self) -> int:
        """Position of this grade's probability in a submission row."""
        return list(Grade).index(self)


def cell_id(condition: Condition | str, level: Level | str) -> str:
    """`<condition>_<level>`: a cell's id, the competition's column name and the Finding's
    `label_hint` (the one place the format is written; `cell_of` reads it back)."""
    return f"{Condition(condition).value}_{Level(level).value}"


CONDITIONS: tuple[Condition, ...] = tuple(Condition)
LEVELS: tuple[Level, ...] = tuple(Level)
CELL_IDS: tuple[str, ...] = tuple(cell_id(c, lv) for c in CONDITIONS for lv in LEVELS)
GRADE_ORDER: tuple[Grade, ...] = tuple(Grade)


def cell_of(cell_id: str) -> tuple[Condition, Level]:
    """Inverse of `<condition>_<level>`; ValueError for an unknown cell."""
    for c in CONDITIONS:
        if cell_id.startswith(c.value + "_"):
            return c, Level(cell_id[len(c.value) + 1:])
    raise ValueError(f"unknown cell {cell_id!r}")
