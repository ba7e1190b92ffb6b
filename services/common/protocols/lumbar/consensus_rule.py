"""Consensus for the lumbar grading protocol: one grade and one point per condition x level.

Pure functions over reader grades; the handler that collects votes calls `decide_study` once a
study has its K reads. Rule `lumbar-majority-median` v1:

- grade: the grade more than half the readers gave; else the median grade (with an even panel,
  the upper median: between two grades the costlier miss is the higher one);
- adjudication: flagged when two readers are `adjudication_spread` grades apart (default 2,
  Normal/Mild against Severe), whatever the decided grade;
- point: the points of the readers who gave the decided grade (all points if none of them
  placed one), on the series most of them used, averaged in millimetres using PixelSpacing, so
  readers zoomed on different series of different resolution still average correctly; the
  instance is the rounded mean of theirs.

DICOM PixelSpacing is (row spacing, column spacing): y is scaled by the first, x by the second.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from itertools import combinations
from statistics import mean

from services.common.protocols.kit.agreement import mean_pairwise_qwk
from services.common.protocols.lumbar.grid import CONDITIONS, LEVELS, Condition, Grade, Level

RULE_NAME, RULE_VERSION = "lumbar-majority-median", 1
_ORDER = list(Grade)


class Method(StrEnum):
    """How a cell's grade was decided."""

    MAJORITY = "majority"
    MEDIAN = "median"


@dataclass(frozen=True)
class LumbarRule:
    """The configurable parts of the rule."""

    adjudication_spread: int = 2  # grades apart that send a cell to adjudication
    use_majority: bool = True  # False: always the median


@dataclass(frozen=True)
class Point:
    """Where a reader marked a finding: pixel (x, y) on one instance of one series."""

    series_id: str
    instance_number: int
    x: float
    y: float
    pixel_spacing: tuple[float, float]  # (row, column) spacing in mm, as DICOM PixelSpacing

    def mm(self) -> tuple[float, float]:
        """(x, y) in millimetres from the image's top-left corner."""
        return self.x * self.pixel_spacing[1], self.y * self.pixel_spacing[0]


@dataclass(frozen=True)
class CellRead:
    """One reader's grade (and point) for one condition at one level of one study."""

    study_id: str
    reader_id: str
    condition: Condition
    level: Level
    grade: Grade
    point: Point | None = None


@dataclass(frozen=True)
class CellDecision:
    condition: Condition
    level: Level
    grade: Grade
    method: Method
    adjudicate: bool
    grades: tuple[Grade, ...]  # the readers' grades, in reader-id order
    point: Point | None


@dataclass(frozen=True)
class StudyDecision:
    study_id: str
    cells: tuple[CellDecision, ...]
    rule: str = f"{RULE_NAME}@{RULE_VERSION}"

    @property
    def needs_adjudication(self) -> bool:
        return any(c.adjudicate for c in self.cells)


def decide_grade(grades: Sequence[Grade], rule: LumbarRule = LumbarRule()) -> tuple[Grade, Method, bool]:
    """(grade, how it was decided, whether to adjudicate) for one cell's reader grades."""
    if not grades:
        raise ValueError("a cell needs at least one reader grade")
    ranks = sorted(_ORDER.index(g) for g in grades)
    adjudicate = ranks[-1] - ranks[0] >= rule.adjudication_spread
    top, count = Counter(grades).most_common(1)[0]
    if rule.use_majority and 2 * count > len(grades):
        return top, Method.MAJORITY, adjudicate
    return _ORDER[ranks[len(ranks) // 2]], Method.MEDIAN, adjudicate


def average_point(points: Sequence[Point]) -> Point | None:
    """The mean point in mm on the series most points are on (first seen wins a tie)."""
    if not points:
        return None
    series = Counter(p.series_id for p in points).most_common(1)[0][0]
    same = [p for p in points if p.series_id == series]
    x_mm = mean(p.mm()[0] for p in same)
    y_mm = mean(p.mm()[1] for p in same)
    spacing = same[0].pixel_spacing
    instance = round(mean(p.instance_number for p in same))
    return Point(series, instance, x_mm / spacing[1], y_mm / spacing[0], spacing)


def point_distance_mm(a: Point, b: Point, slice_spacing_mm: float | None = None) -> float:
    """Distance between two points on one series: in-plane in mm, plus the through-plane
    distance between their instances when the slice spacing is given."""
    if a.series_id != b.series_id:
        raise ValueError(f"points on different series ({a.series_id}, {b.series_id}) have no "
                         "common frame without the image geometry")
    (ax, ay), (bx, by) = a.mm(), b.mm()
    dz = (a.instance_number - b.instance_number) * (slice_spacing_mm or 0.0)
    return math.sqrt((ax - bx) ** 2 + (ay - by) ** 2 + dz ** 2)


def decide_cell(reads: Sequence[CellRead], rule: LumbarRule = LumbarRule()) -> CellDecision:
    """Grade and point for one condition x level from its reads."""
    reads = sorted(reads, key=lambda r: r.reader_id)
    grade, method, adjudicate = decide_grade([r.grade for r in reads], rule)
    agreeing = [r.point for r in reads if r.grade is grade and r.point is not None]
    point = average_point(agreeing or [r.point for r in reads if r.point is not None])
    return CellDecision(reads[0].condition, reads[0].level, grade, method, adjudicate,
                        tuple(r.grade for r in reads), point)


def decide_study(study_id: str, reads: Iterable[CellRead],
                 rule: LumbarRule = LumbarRule()) -> StudyDecision:
    """A decision for every graded cell of one study (cells nobody graded are left out)."""
    by_cell: dict[tuple[Condition, Level], list[CellRead]] = defaultdict(list)
    for read in reads:
        if read.study_id != study_id:
            raise ValueError(f"read of study {read.study_id} passed for study {study_id}")
        by_cell[(read.condition, read.level)].append(read)
    cells = tuple(decide_cell(by_cell[(c, lv)], rule) for c in CONDITIONS for lv in LEVELS
                  if (c, lv) in by_cell)
    return StudyDecision(study_id, cells)


# --- agreement ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    qwk: float  # mean pairwise quadratic-weighted kappa (NaN: not estimable)
    mean_point_distance_mm: float | None  # mean over reader pairs with points on one series
    n_reads: int


def agreement(reads: Iterable[CellRead], by: str = "cell") -> dict[str, Agreement]:
    """Reader agreement grouped by "cell" (condition_level), "condition" or "level".

    An item is one (study, cell); kappa is `mean_pairwise_qwk` over readers on those items.
    """
    key = {"cell": lambda r: f"{r.condition.value}_{r.level.value}",
           "condition": lambda r: r.condition.value, "level": lambda r: r.level.value}[by]
    groups: dict[str, list[CellRead]] = defaultdict(list)
    for read in reads:
        groups[key(read)].append(read)
    return {name: _agreement(group) for name, group in groups.items()}


def _agreement(reads: list[CellRead]) -> Agreement:
    ratings: dict[str, dict[tuple, int]] = defaultdict(dict)
    items: dict[tuple, list[Point]] = defaultdict(list)
    for r in reads:
        item = (r.study_id, r.condition, r.level)
        ratings[r.reader_id][item] = _ORDER.index(r.grade)
        if r.point is not None:
            items[item].append(r.point)
    distances = [point_distance_mm(a, b) for points in items.values()
                 for a, b in combinations(points, 2) if a.series_id == b.series_id]
    return Agreement(mean_pairwise_qwk(ratings, len(_ORDER)),
                     mean(distances) if distances else None, len(reads))
