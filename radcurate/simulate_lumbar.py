"""Simulated readers for the lumbar grading protocol.

A reader grades every cell from the hidden truth through imperfect eyes: with the reader's own
error rate a grade slips one step (up or down, never past the ends), and each point is placed
near the true one (a small Gaussian jitter in pixels, on the true instance). Points go on the
series the truth names, found by description in the study's series list, since the truth's
series ids are folder names and the gateway knows series by their SeriesInstanceUID.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from services.common.protocols.lumbar.grid import GRADE_ORDER

POINT_SD_PX = 1.0  # readers' point placement scatter, in pixels
GRADES = [g.value for g in GRADE_ORDER]


@dataclass(frozen=True)
class LumbarTruth:
    grades: dict[str, str]  # cell id -> grade
    coordinates: tuple[dict, ...]  # truth.jsonl coordinates (series_id, instance_number, condition, level, x, y)
    series: dict[str, str]  # truth series id -> series description


def lumbar_truth(row: dict) -> LumbarTruth:
    return LumbarTruth(dict(row["grades"]), tuple(row.get("coordinates", ())), dict(row.get("series", {})))


def perturb(grade: str, error_rate: float, rng: random.Random) -> str:
    """The grade, or with probability `error_rate` one step off (the direction at random)."""
    if rng.random() >= error_rate:
        return grade
    k = GRADES.index(grade)
    step = rng.choice((-1, 1)) if 0 < k < len(GRADES) - 1 else (1 if k == 0 else -1)
    return GRADES[k + step]


def grade_study(truth: LumbarTruth, series: list[dict], error_rate: float, rng: random.Random) -> list[dict]:
    """The reader's 25 grades with points, for `POST /reviews/{id}/vote` (`series`: the study's
    series list from the gateway)."""
    uid_by_description = {s["series_description"]: s["series_instance_uid"] for s in series}
    points = {}
    for c in truth.coordinates:
        uid = uid_by_description.get(truth.series.get(c["series_id"], ""))
        if uid is not None:
            points[f"{c['condition']}_{c['level']}"] = {
                "series_instance_uid": uid, "instance_number": int(c["instance_number"]),
                "x": round(max(0.0, c["x"] + rng.gauss(0, POINT_SD_PX)), 1),
                "y": round(max(0.0, c["y"] + rng.gauss(0, POINT_SD_PX)), 1)}
    return [{"cell_id": cell, "grade": perturb(grade, error_rate, rng), "point": points.get(cell)}
            for cell, grade in sorted(truth.grades.items())]
