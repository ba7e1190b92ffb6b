"""The lumbar protocol inside the consensus service: from stored votes to a study decision, and
from decided studies to the agreement figures.

Votes carry a grade (and maybe a point) per cell; points are pixels on one instance, so each is
given its series' PixelSpacing (from the study's DICOM objects, filled at ingest) before
`consensus_rule` averages them in millimetres. A study is accepted when no cell needs
adjudication: a cell whose readers are two grades apart waits for a curator instead of
entering the benchmark on a median nobody chose.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from statistics import mean

import numpy as np

from services.common.contracts import CellConsensus, CellPoint
from services.common.protocols.kit.agreement import krippendorff_alpha_weighted
from services.common.protocols.kit.bootstrap import DEFAULT_REPLICATES, patient_resample_weights, percentile_interval
from services.common.protocols.kit.decision import Decision
from services.common.protocols.kit.rule_config import RuleConfig
from services.common.protocols.lumbar.consensus_rule import (
    CellRead,
    LumbarRule,
    Point,
    StudyDecision,
    agreement,
    decide_study,
)
from services.common.protocols.lumbar.grid import Grade, cell_id, cell_of

UNKNOWN_SPACING = (1.0, 1.0)  # no PixelSpacing in the file: average in pixels rather than refuse


def spacing_by_series(objects: Iterable[Mapping]) -> dict[str, tuple[float, float]]:
    """Series UID -> (row, column) PixelSpacing in mm, from the study's DicomObject dicts."""
    spacing: dict[str, tuple[float, float]] = {}
    for o in objects:
        if o.get("pixel_spacing") and o["series_instance_uid"] not in spacing:
            row, col = o["pixel_spacing"]
            spacing[o["series_instance_uid"]] = (float(row), float(col))
    return spacing


def cell_reads(study_id: str, votes: Iterable[Mapping], spacing: Mapping[str, tuple[float, float]]) -> list[CellRead]:
    """Every (reader, cell) read of a study from vote rows with `reader_id` and `grades`."""
    reads = []
    for vote in votes:
        for g in vote["grades"] or []:
            condition, level = cell_of(g["cell_id"])
            p = g.get("point")
            point = p and Point(p["series_instance_uid"], int(p["instance_number"]), float(p["x"]), float(p["y"]),
                                spacing.get(p["series_instance_uid"], UNKNOWN_SPACING))
            reads.append(CellRead(study_id, vote["reader_id"], condition, level, Grade(g["grade"]), point or None))
    return reads


def decide_lumbar(study_id: str, votes: Sequence[Mapping], objects: Iterable[Mapping],
                  config: RuleConfig) -> tuple[Decision, list[CellConsensus]]:
    """The study's decision (accepted unless a cell needs adjudication) and its per-cell grades."""
    decided = decide_study(study_id, cell_reads(study_id, votes, spacing_by_series(objects)),
                           LumbarRule(config.adjudication_spread, config.use_majority))
    cells = [_consensus(c) for c in decided.cells]
    flagged = [c.cell_id for c in cells if c.adjudicate]
    findings = sorted(f"{c.cell_id}:{c.grade}" for c in cells if c.grade != Grade.NORMAL_MILD.value)
    reason = (f"readers two grades apart at {', '.join(flagged)}" if flagged
              else f"{len(cells)} cells graded ({_methods(decided)})")
    return Decision(accepted=not flagged, labels=tuple(findings), rule=config.rule, rule_version=config.version,
                    needs_adjudication=bool(flagged), reason=reason), cells


def _methods(decided: StudyDecision) -> str:
    majority = sum(c.method.value == "majority" for c in decided.cells)
    return f"{majority} by majority, {len(decided.cells) - majority} by median"


def _consensus(c) -> CellConsensus:
    point = c.point and CellPoint(series_instance_uid=c.point.series_id, instance_number=c.point.instance_number,
                                  x=round(c.point.x, 2), y=round(c.point.y, 2))
    return CellConsensus(cell_id=cell_id(c.condition, c.level), grade=c.grade.value,
                         method=c.method.value, adjudicate=c.adjudicate, point=point or None)


GRADE_ORDER = (Grade.NORMAL_MILD, Grade.MODERATE, Grade.SEVERE)


def ordinal_alpha(reads: Sequence[CellRead], patients: Mapping[str, str], n_bootstrap: int = DEFAULT_REPLICATES,
                  seed: int = 0) -> dict:
    """Krippendorff's alpha (ordinal) over every graded cell, overall and per condition, with a
    patient-bootstrap 95% interval. Units are (study, condition, level); unlike a mean of pairwise
    QWKs it uses every read, whichever readers a study happened to get."""
    units: dict[tuple[str, str, str], list[int]] = {}
    for r in reads:
        units.setdefault((r.study_id, r.condition.value, r.level.value), [0, 0, 0])[GRADE_ORDER.index(r.grade)] += 1

    def figure(keys: list[tuple[str, str, str]]) -> dict:
        if not keys:
            return {"alpha": None, "ci95": None, "units": 0}
        counts = np.array([units[k] for k in keys])
        point = float(krippendorff_alpha_weighted(counts, np.ones((1, len(keys))), "ordinal")[0])
        weights = patient_resample_weights([patients.get(k[0], k[0]) for k in keys], n_bootstrap, seed)
        interval = percentile_interval(krippendorff_alpha_weighted(counts, weights, "ordinal"))
        return {"alpha": None if math.isnan(point) else point, "ci95": interval, "units": len(keys)}

    keys = sorted(units)
    return {"overall": figure(keys),
            "by_condition": {c: figure([k for k in keys if k[1] == c]) for c in sorted({k[1] for k in keys})},
            "bootstrap": {"unit": "patient", "replicates": n_bootstrap, "seed": seed}}


def lumbar_agreement_report(studies: Sequence[Mapping], votes: Sequence[Mapping]) -> dict:
    """Quadratic-weighted kappa per condition, per level and per cell, and point distances in mm.

    `studies`: decided study rows with `study_id` and `objects`; `votes`: counted vote rows with
    `study_id`, `reader_id` and `grades`. Aggregates only, never a study's grades.
    """
    spacing = {s["study_id"]: spacing_by_series(s["objects"]) for s in studies}
    by_study: dict[str, list[Mapping]] = {}
    for v in votes:
        by_study.setdefault(v["study_id"], []).append(v)
    reads = [r for sid, vs in by_study.items() for r in cell_reads(sid, vs, spacing.get(sid, {}))]
    overall = agreement(reads, by="cell")
    return {
        "protocol": "lumbar-grading", "studies": len(studies), "reads": len(reads),
        "qwk_by_condition": _figures(agreement(reads, by="condition")),
        "qwk_by_level": _figures(agreement(reads, by="level")),
        "qwk_by_cell": _figures(overall),
        "mean_qwk": _mean([a.qwk for a in overall.values()]),
        "mean_point_distance_mm": _mean([a.mean_point_distance_mm for a in overall.values()]),
        "grade_shares": _grade_shares(reads),
        "krippendorff_alpha_ordinal": ordinal_alpha(
            reads, {s["study_id"]: str(s.get("patient_id", s["study_id"])) for s in studies}),
    }


def _figures(groups: Mapping) -> dict[str, dict]:
    return {name: {"qwk": _num(a.qwk), "mean_point_distance_mm": _num(a.mean_point_distance_mm),
                   "n_reads": a.n_reads} for name, a in sorted(groups.items())}


def _grade_shares(reads: Sequence[CellRead]) -> dict[str, float]:
    n = max(len(reads), 1)
    return {g.value: round(sum(r.grade is g for r in reads) / n, 4) for g in Grade}


def _mean(values: Iterable[float | None]) -> float | None:
    finite = [v for v in values if v is not None and v == v]
    return round(mean(finite), 4) if finite else None


def _num(value: float | None) -> float | None:
    """JSON-safe: NaN (kappa not estimable) becomes None."""
    return None if value is None or value != value else round(value, 4)
