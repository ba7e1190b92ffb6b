"""Ordinal consensus, point averaging in mm, and quadratic-weighted kappa."""

import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from services.common.protocols.kit.agreement import mean_pairwise_qwk, quadratic_weighted_kappa
from services.common.protocols.lumbar.consensus_rule import (
    CellRead,
    LumbarRule,
    Method,
    Point,
    agreement,
    average_point,
    decide_grade,
    decide_study,
    point_distance_mm,
)
from services.common.protocols.lumbar.grid import Condition, Grade, Level

N, M, S = Grade.NORMAL_MILD, Grade.MODERATE, Grade.SEVERE
SCS, L45 = Condition.SPINAL_CANAL_STENOSIS, Level.L4_L5


@pytest.mark.parametrize("seed", range(100))
def test_qwk_equals_scikit_learn_for_two_raters(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    a = rng.integers(0, 3, n)
    b = np.clip(a + rng.integers(-1, 2, n), 0, 2) if seed % 2 else rng.integers(0, 3, n)
    expected = cohen_kappa_score(a, b, weights="quadratic", labels=[0, 1, 2])
    got = quadratic_weighted_kappa(a, b, 3)
    assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected, abs=1e-12)


def test_qwk_of_two_constant_raters_is_not_estimable():
    assert math.isnan(quadratic_weighted_kappa([0, 0, 0], [0, 0, 0], 3))


def test_qwk_penalises_two_grade_disagreement_more():
    one_off = quadratic_weighted_kappa([0, 1, 2, 0], [1, 1, 2, 0], 3)
    two_off = quadratic_weighted_kappa([0, 1, 2, 0], [2, 1, 2, 0], 3)
    assert two_off < one_off


def test_pairwise_mean_averages_pairs_on_shared_items():
    ratings = {"a": {1: 0, 2: 1, 3: 2}, "b": {1: 0, 2: 1, 3: 2}, "c": {1: 2, 2: 1, 3: 0}}
    expected = np.mean([1.0, quadratic_weighted_kappa([0, 1, 2], [2, 1, 0], 3),
                        quadratic_weighted_kappa([0, 1, 2], [2, 1, 0], 3)])
    assert mean_pairwise_qwk(ratings, 3) == pytest.approx(expected)
    assert mean_pairwise_qwk({"a": {1: 0, 2: 1}, "b": {1: 0, 2: 1}}, 3) == pytest.approx(1.0)
    assert math.isnan(mean_pairwise_qwk({"a": {1: 0}, "b": {2: 0}}, 3))


def test_majority_then_median():
    assert decide_grade([M, M, S]) == (M, Method.MAJORITY, False)
    assert decide_grade([N, M, S]) == (M, Method.MEDIAN, True)
    assert decide_grade([N, S]) == (S, Method.MEDIAN, True)  # even panel: upper median
    assert decide_grade([N, N, S]) == (N, Method.MAJORITY, True)  # two grades apart


def test_the_rule_is_configurable():
    assert decide_grade([M, M, S], LumbarRule(use_majority=False))[1] is Method.MEDIAN
    assert decide_grade([N, M], LumbarRule(adjudication_spread=1))[2]


def test_points_average_in_millimetres_across_pixel_spacings():
    a = Point("s1", 6, 10.0, 20.0, (1.0, 1.0))
    b = Point("s1", 8, 10.0, 10.0, (2.0, 2.0))  # (20, 20) mm
    mid = average_point([a, b])
    assert mid.mm() == pytest.approx((15.0, 20.0))
    assert mid.instance_number == 7 and mid.series_id == "s1"


def test_points_on_a_minority_series_are_left_out():
    points = [Point("sag", 6, 10, 10, (1, 1)), Point("sag", 6, 12, 10, (1, 1)),
              Point("ax", 3, 50, 50, (1, 1))]
    assert average_point(points).series_id == "sag"
    assert average_point([]) is None


def test_distance_in_mm_in_plane_and_through_plane():
    a, b = Point("s", 5, 0, 0, (0.5, 0.5)), Point("s", 7, 6, 8, (0.5, 0.5))
    assert point_distance_mm(a, b) == pytest.approx(5.0)
    assert point_distance_mm(a, b, slice_spacing_mm=3.0) == pytest.approx(math.hypot(5, 6))
    with pytest.raises(ValueError, match="different series"):
        point_distance_mm(a, Point("t", 5, 0, 0, (1, 1)))


def _read(reader, grade, x=None, study="st1", condition=SCS, level=L45):
    point = Point("sag", 6, x, 40.0, (0.8, 0.8)) if x is not None else None
    return CellRead(study, reader, condition, level, grade, point)


def test_a_study_decision_uses_the_points_of_readers_who_gave_the_decided_grade():
    decision = decide_study("st1", [_read("r1", M, 10), _read("r2", M, 20), _read("r3", S, 90)])
    [cell] = decision.cells
    assert cell.grade is M and cell.point.x == pytest.approx(15.0)
    assert not decision.needs_adjudication


def test_a_two_grade_spread_flags_the_study():
    assert decide_study("st1", [_read("r1", N), _read("r2", M), _read("r3", S)]).needs_adjudication


def test_reads_of_another_study_are_refused():
    with pytest.raises(ValueError):
        decide_study("st1", [_read("r1", N, study="st2")])


def test_agreement_per_cell_condition_and_level():
    reads = [_read(r, g, x, study=s) for s, grades in
             (("a", (N, N, M)), ("b", (S, S, S)), ("c", (M, M, M)))
             for r, g, x in zip(("r1", "r2", "r3"), grades, (10, 11, 12), strict=True)]
    by_cell = agreement(reads)
    stats = by_cell["spinal_canal_stenosis_l4_l5"]
    assert 0 < stats.qwk < 1 and stats.n_reads == 9
    assert stats.mean_point_distance_mm == pytest.approx((0.8 + 0.8 + 1.6) / 3)
    assert set(agreement(reads, by="condition")) == {"spinal_canal_stenosis"}
    assert set(agreement(reads, by="level")) == {"l4_l5"}
