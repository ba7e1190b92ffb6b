"""The hidden truth of a synthetic lumbar study: 25 grades and where each finding is seen.

Degeneration is a patient trait, worst at L4/L5 and L5/S1 (spinal canal and subarticular
stenosis peak at L4/L5, foraminal narrowing at L5/S1), and left and right share most of it, as
in the competition data; rates aim at its look (most cells Normal/Mild, Severe rare), not at
any figure downstream.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from services.common.protocols.lumbar.competition import Coordinate, SeriesType
from services.common.protocols.lumbar.grid import CONDITIONS, LEVELS, Condition, Grade, Group, Level, cell_id

LEVEL_WEIGHT = {Group.SPINAL: (0.25, 0.4, 0.75, 1.3, 0.6),
                Group.FORAMINAL: (0.2, 0.35, 0.7, 1.1, 1.3),
                Group.SUBARTICULAR: (0.25, 0.4, 0.8, 1.3, 0.9)}
MODERATE_AT, SEVERE_AT = 0.62, 0.85  # thresholds on a cell's severity in [0, 1)
# Geometry (pixels) shared by truth and painting: sagittal 96x96, axial 64x64.
SAG_SIZE, AX_SIZE = 96, 64
SAG_INSTANCES, AX_PER_LEVEL = 12, 3
LEVEL_ROWS = (22, 34, 46, 58, 70)  # disc rows on the sagittal images, L1/L2 .. L5/S1
CANAL_COL, FORAMEN_COL = 58, 54
RIGHT_FORAMEN_INSTANCE, LEFT_FORAMEN_INSTANCE = 3, 10  # sagittal slices go right -> left
AX_CENTER, AX_RECESS_DX, AX_RECESS_Y = 32, 7, 40


@dataclass(frozen=True)
class LumbarStudyTruth:
    study_id: str
    patient_id: str
    series_ids: dict[SeriesType, str]
    grades: dict[tuple[Condition, Level], Grade]
    coordinates: list[Coordinate] = field(default_factory=list)
    row_jitter: int = 0  # the spine sits a little higher or lower in each study

    def grade_record(self) -> dict[str, str]:
        return {cell_id(c, lv): g.value for (c, lv), g in self.grades.items()}


def build_lumbar_cohort(rng: np.random.Generator, n_studies: int) -> list[LumbarStudyTruth]:
    """`n_studies` studies, one per patient (as in the competition)."""
    return [_study(rng, i) for i in range(1, n_studies + 1)]


def _study(rng: np.random.Generator, i: int) -> LumbarStudyTruth:
    study_id = str(4_000_000 + 1_009 * i)  # numeric, like the competition's study ids
    series_ids = {t: str(100_000_000 + 1_000 * i + k) for k, t in enumerate(SeriesType, 1)}
    grades = _grades(rng, degeneration=float(rng.beta(2.0, 3.0)))
    jitter = int(rng.integers(-3, 4))
    truth = LumbarStudyTruth(study_id, f"LP-{i:06d}", series_ids, grades, row_jitter=jitter)
    truth.coordinates.extend(_coordinates(truth, rng))
    return truth


def _grades(rng: np.random.Generator, degeneration: float) -> dict[tuple[Condition, Level], Grade]:
    grades = {}
    for k, level in enumerate(LEVELS):
        shared = rng.random()  # left and right at one level degenerate together
        for condition in CONDITIONS:
            weight = LEVEL_WEIGHT[condition.group][k]
            own = 0.55 * shared + 0.45 * rng.random() if condition.group != Group.SPINAL \
                else rng.random()
            severity = min(0.999, own * (0.5 + 1.1 * degeneration * weight))
            grades[(condition, level)] = (Grade.SEVERE if severity >= SEVERE_AT else
                                          Grade.MODERATE if severity >= MODERATE_AT
                                          else Grade.NORMAL_MILD)
    return grades


def level_row(truth: LumbarStudyTruth, level: Level) -> int:
    return LEVEL_ROWS[LEVELS.index(level)] + truth.row_jitter


def _coordinates(truth: LumbarStudyTruth, rng: np.random.Generator) -> list[Coordinate]:
    """Where each of the 25 findings is seen, on the series a reader would use for it."""
    points = []
    for condition in CONDITIONS:
        for k, level in enumerate(LEVELS):
            series, instance, x, y = _where(truth, condition, level, k)
            x, y = x + float(rng.normal(0, 0.8)), y + float(rng.normal(0, 0.8))
            points.append(Coordinate(truth.study_id, truth.series_ids[series], instance,
                                     condition, level, round(x, 2), round(y, 2)))
    return points


def _where(truth: LumbarStudyTruth, condition: Condition, level: Level,
           k: int) -> tuple[SeriesType, int, float, float]:
    if condition.group is Group.SPINAL:
        return SeriesType.SAGITTAL_T2_STIR, SAG_INSTANCES // 2, CANAL_COL, level_row(truth, level)
    left = condition.value.startswith("left")
    if condition.group is Group.FORAMINAL:
        instance = LEFT_FORAMEN_INSTANCE if left else RIGHT_FORAMEN_INSTANCE
        return SeriesType.SAGITTAL_T1, instance, FORAMEN_COL, level_row(truth, level)
    # axial images are viewed radiologically: the patient's left is on the image's right
    x = AX_CENTER + (AX_RECESS_DX if left else -AX_RECESS_DX)
    return SeriesType.AXIAL_T2, k * AX_PER_LEVEL + 2, x, AX_RECESS_Y
