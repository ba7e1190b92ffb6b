"""Cartoon lumbar MR images whose stenoses follow the hidden grades.

Not anatomy: enough structure (vertebral bodies, discs, a CSF-filled canal, foramina, lateral
recesses) that a grade is visible where the truth's point says it is, so a reader simulator or
a toy model has something real to look at. Severe narrowing leaves less CSF / fat signal.
"""

from __future__ import annotations

import numpy as np

from radcurate.synth.lumbar_truth import (
    AX_CENTER,
    AX_PER_LEVEL,
    AX_RECESS_DX,
    AX_RECESS_Y,
    AX_SIZE,
    CANAL_COL,
    FORAMEN_COL,
    LEFT_FORAMEN_INSTANCE,
    RIGHT_FORAMEN_INSTANCE,
    SAG_INSTANCES,
    SAG_SIZE,
    LumbarStudyTruth,
    level_row,
)
from services.common.protocols.lumbar.competition import SeriesType
from services.common.protocols.lumbar.grid import LEVELS, Condition, Grade

_OPEN = {Grade.NORMAL_MILD: 1.0, Grade.MODERATE: 0.55, Grade.SEVERE: 0.2}  # share left open
# (bone, disc, fluid) signal per series type: T1 fluid dark, T2/STIR fluid bright
SIGNAL = {SeriesType.SAGITTAL_T1: (1500, 900, 300), SeriesType.SAGITTAL_T2_STIR: (700, 1300, 2200),
          SeriesType.AXIAL_T2: (700, 1300, 2200)}
_SY, _SX = np.mgrid[0:SAG_SIZE, 0:SAG_SIZE]
_AY, _AX = np.mgrid[0:AX_SIZE, 0:AX_SIZE]


def series_images(truth: LumbarStudyTruth, series: SeriesType,
                  rng: np.random.Generator) -> list[np.ndarray]:
    """The uint16 images of one series, in instance order.

    Slices that show the same structures share one drawing (only their noise differs), which
    keeps a study to a handful of drawings: the generator must write hundreds per second.
    """
    if series is SeriesType.AXIAL_T2:
        drawn = {}
        keys = [(k // AX_PER_LEVEL if k % AX_PER_LEVEL == 1 else -1, k)
                for k in range(len(LEVELS) * AX_PER_LEVEL)]
        for key, k in keys:
            if key not in drawn:
                drawn[key] = _axial(truth, k)
        return [_noisy(drawn[key], rng) for key, _ in keys]
    drawn = {}
    images = []
    for instance in range(1, SAG_INSTANCES + 1):
        key = _slice_class(instance)
        if key not in drawn:
            drawn[key] = _sagittal(truth, series, instance)
        images.append(_noisy(drawn[key], rng))
    return images


def _slice_class(instance: int) -> str:
    """Which structures a sagittal slice shows (what `_paint_level` draws on it)."""
    if abs(instance - SAG_INSTANCES // 2) <= 1:
        return "canal"
    for side, at in (("left", LEFT_FORAMEN_INSTANCE), ("right", RIGHT_FORAMEN_INSTANCE)):
        if abs(instance - at) <= 1:
            return side
    return "plain"


def _noisy(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.integers(0, 120, image.shape, dtype=np.int32)
    return np.clip(image.astype(np.int32) + noise, 0, 4095).astype(np.uint16)


def _sagittal(truth: LumbarStudyTruth, series: SeriesType, instance: int) -> np.ndarray:
    bone, disc, fluid = SIGNAL[series]
    image = np.full((SAG_SIZE, SAG_SIZE), 150, np.int32)
    image[(_SX >= 30) & (_SX < 52) & (_SY >= 12) & (_SY < 82)] = bone
    for level in LEVELS:
        row = level_row(truth, level)
        image[(_SX >= 30) & (_SX < 53) & (abs(_SY - row) <= 1)] = disc
        _paint_level(image, truth, series, instance, level, row, fluid)
    return image


def _paint_level(image: np.ndarray, truth: LumbarStudyTruth, series: SeriesType, instance: int,
                 level, row: int, fluid: int) -> None:
    """The canal (central slices) or a foramen (lateral slices) next to one disc."""
    if abs(instance - SAG_INSTANCES // 2) <= 1:
        width = 6 * _OPEN[truth.grades[(Condition.SPINAL_CANAL_STENOSIS, level)]]
        canal = (abs(_SX - CANAL_COL) <= width / 2 + 0.5) & (abs(_SY - row) <= 5)
        image[canal] = fluid
    for side, at in (("left", LEFT_FORAMEN_INSTANCE), ("right", RIGHT_FORAMEN_INSTANCE)):
        if abs(instance - at) <= 1:
            grade = truth.grades[(Condition(f"{side}_neural_foraminal_narrowing"), level)]
            radius = 1 + 3 * _OPEN[grade]
            image[(_SX - FORAMEN_COL) ** 2 + (_SY - row + 5) ** 2 <= radius ** 2] = fluid


def _axial(truth: LumbarStudyTruth, k: int) -> np.ndarray:
    level = LEVELS[k // AX_PER_LEVEL]
    bone, disc, fluid = SIGNAL[SeriesType.AXIAL_T2]
    image = np.full((AX_SIZE, AX_SIZE), 150, np.int32)
    on_disc = k % AX_PER_LEVEL == 1
    image[(_AX - AX_CENTER) ** 2 + (_AY - 22) ** 2 <= 13 ** 2] = disc if on_disc else bone
    sac = 6 * (_OPEN[truth.grades[(Condition.SPINAL_CANAL_STENOSIS, level)]] if on_disc else 1)
    image[(_AX - AX_CENTER) ** 2 + (_AY - AX_RECESS_Y) ** 2 <= sac ** 2] = fluid
    for side, dx in (("left", AX_RECESS_DX), ("right", -AX_RECESS_DX)):
        grade = truth.grades[(Condition(f"{side}_subarticular_stenosis"), level)]
        radius = 0.5 + 2.5 * (_OPEN[grade] if on_disc else 1)
        image[(_AX - AX_CENTER - dx) ** 2 + (_AY - AX_RECESS_Y) ** 2 <= radius ** 2] = fluid
    return image
