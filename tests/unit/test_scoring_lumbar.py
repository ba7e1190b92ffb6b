"""The RSNA 2024 lumbar metric: hand-computed cases and equality with sklearn's log_loss."""

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss

from services.common.protocols.lumbar.grid import CONDITIONS, LEVELS, Condition, Grade, Group, Level
from services.common.protocols.lumbar.scoring import (
    EPS,
    SubmissionError,
    parse_submission,
    row_id,
    score_lumbar,
    score_lumbar_with_intervals,
    split_row_id,
    truth_from_train_csv,
)

NM, MO, SE = Grade.NORMAL_MILD, Grade.MODERATE, Grade.SEVERE
COLUMNS = [f"{c}_{lv}" for c in CONDITIONS for lv in LEVELS]
SPINAL = Condition.SPINAL_CANAL_STENOSIS


def _train_csv(studies):
    """`train.csv` text from {study_id: {column: grade text}}; absent columns are empty."""
    lines = [",".join(["study_id", *COLUMNS])]
    lines += [",".join([s, *(cells.get(c, "") for c in COLUMNS)]) for s, cells in studies.items()]
    return "\n".join(lines) + "\n"


def _all_rows(study_ids, proba):
    return {row_id(s, c, lv): proba for s in study_ids for c in CONDITIONS for lv in LEVELS}


def _all_normal(study_id):
    return dict.fromkeys((row_id(study_id, c, lv) for c in CONDITIONS for lv in LEVELS), NM)


def _submission_csv(rows):
    lines = ["row_id,normal_mild,moderate,severe"]
    lines += [f"{rid},{a!r},{b!r},{c!r}" for rid, (a, b, c) in rows.items()]
    return "\n".join(lines) + "\n"


# --- names and files ----------------------------------------------------------------------


def test_five_conditions_by_five_levels_make_the_twenty_five_rows_per_study():
    assert len(CONDITIONS) == len(LEVELS) == 5
    assert row_id(4003253, SPINAL, Level.L1_L2) == "4003253_spinal_canal_stenosis_l1_l2"
    assert row_id("7", "left_neural_foraminal_narrowing", "l5_s1") == (
        "7_left_neural_foraminal_narrowing_l5_s1"
    )
    assert split_row_id("4003253_right_subarticular_stenosis_l4_l5") == (
        "4003253", Condition.RIGHT_SUBARTICULAR_STENOSIS, Level.L4_L5
    )
    assert [c.group for c in CONDITIONS].count(Group.FORAMINAL) == 2
    weights = [(g.value, g.weight) for g in Grade]
    assert weights == [("Normal/Mild", 1), ("Moderate", 2), ("Severe", 4)]


def test_truth_keeps_graded_cells_and_skips_empty_ones():
    cells = {
        "spinal_canal_stenosis_l1_l2": "Severe",
        "left_subarticular_stenosis_l5_s1": "Moderate",
    }
    text = _train_csv({"1": cells})
    assert truth_from_train_csv(text) == {
        "1_spinal_canal_stenosis_l1_l2": SE, "1_left_subarticular_stenosis_l5_s1": MO
    }


@pytest.mark.parametrize(
    "text",
    [
        "",
        _train_csv({"1": {"spinal_canal_stenosis_l1_l2": "Mild"}}),
        _train_csv({"1": {}}).replace(",spinal_canal_stenosis_l1_l2", ",spinal_l1_l2"),
        _train_csv({"1": {}, "2": {}}).replace("\n2,", "\n1,"),
    ],
    ids=["empty", "unknown grade", "missing column", "repeated study"],
)
def test_malformed_train_csv_is_rejected(text):
    with pytest.raises(ValueError):
        truth_from_train_csv(text)


def test_submission_rows_are_read_and_need_not_sum_to_one():
    text = "severe,row_id,moderate,normal_mild\r\n 2 ,1_spinal_canal_stenosis_l1_l2,0,1e-3\r\n\r\n"
    assert parse_submission(text) == {"1_spinal_canal_stenosis_l1_l2": (0.001, 0.0, 2.0)}


HEAD = "row_id,normal_mild,moderate,severe\n"
ROW = "1_spinal_canal_stenosis_l1_l2"
BAD_SUBMISSIONS = {
    "empty": ("", "empty"),
    "missing column": ("row_id,normal_mild,moderate\n", "missing columns: 1 ('severe')"),
    "extra column": ("row_id,normal_mild,moderate,severe,any\n", "unexpected columns: 1 ('any')"),
    "NaN": (HEAD + ROW + ",nan,0,1\n", "NaN or infinite"),
    "infinity": (HEAD + ROW + ",1,inf,0\n", "NaN or infinite"),
    "overflow": (HEAD + ROW + ",1,1e999,0\n", "NaN or infinite"),
    "negative": (HEAD + ROW + ",1,-0.1,0\n", "negative values: 1 (line 2 '-0.1')"),
    "words": (HEAD + ROW + ",1,x,0\n", "not numbers"),
    "short line": (HEAD + ROW + ",1,0\n", "wrong number of fields"),
    "bad row id": (HEAD + "1_spinal_l1_l2,1,0,0\n", "row ids not of the form"),
    "repeated row": (
        HEAD + ROW + ",1,0,0\n" + ROW + ",1,0,0\n",
        "repeated row ids: 1 ('1_spinal_canal_stenosis_l1_l2')",
    ),
}


@pytest.mark.parametrize("case", BAD_SUBMISSIONS)
def test_bad_submission_is_rejected_with_a_clear_message(case):
    text, expected = BAD_SUBMISSIONS[case]
    with pytest.raises(SubmissionError) as error:
        parse_submission(text)
    assert expected in str(error.value)


def test_missing_rows_are_an_error_naming_them():
    truth = _all_normal("1")
    rows = _all_rows(["1"], (1.0, 0.0, 0.0))
    del rows["1_spinal_canal_stenosis_l3_l4"]
    with pytest.raises(SubmissionError) as error:
        score_lumbar(truth, rows)
    assert "missing rows: 1 ('1_spinal_canal_stenosis_l3_l4')" in str(error.value)


def test_rows_of_ungraded_levels_must_still_be_submitted_so_gaps_in_truth_stay_hidden():
    truth = _all_normal("1")
    del truth["1_left_subarticular_stenosis_l1_l2"]  # ungraded in the truth
    rows = _all_rows(["1"], (1.0, 0.0, 0.0))
    del rows["1_left_subarticular_stenosis_l1_l2"]
    with pytest.raises(SubmissionError, match="missing rows: 1"):
        score_lumbar(truth, rows)


def test_rows_for_unknown_studies_are_an_error():
    rows = _all_rows(["1", "2"], (1.0, 0.0, 0.0))
    with pytest.raises(SubmissionError, match="rows for studies not in this benchmark: 25"):
        score_lumbar(_all_normal("1"), rows)


# --- hand-computed scores -----------------------------------------------------------------


def test_all_normal_study():
    result = score_lumbar(_all_normal("1"), _all_rows(["1"], (0.8, 0.15, 0.05)))
    for group in ("spinal", "foraminal", "subarticular"):
        assert result[group] == pytest.approx(-math.log(0.8), abs=1e-12)
    assert result["any_severe_spinal"] == pytest.approx(-math.log(0.95), abs=1e-12)
    assert result["score"] == pytest.approx((-3 * math.log(0.8) - math.log(0.95)) / 4, abs=1e-12)


def test_severe_at_one_spinal_level_only_weighs_four_times():
    truth = {**_all_normal("A"), **_all_normal("B"), row_id("A", SPINAL, Level.L4_L5): SE}
    rows = _all_rows(["A", "B"], (0.7, 0.2, 0.1))
    rows[row_id("A", SPINAL, Level.L4_L5)] = (0.2, 0.3, 0.5)
    result = score_lumbar(truth, rows)
    # spinal rows: 9 normal (weight 1, p=.7) and 1 severe (weight 4, p=.5)
    expected_spinal = (-9 * math.log(0.7) - 4 * math.log(0.5)) / 13
    assert result["spinal"] == pytest.approx(expected_spinal, abs=1e-12)
    assert result["foraminal"] == pytest.approx(-math.log(0.7), abs=1e-12)
    # study A: any severe, prediction max(.1, .5) = .5, weight 4; study B: none, .1, weight 1
    expected_any = (-4 * math.log(0.5) - math.log(0.9)) / 5
    assert result["any_severe_spinal"] == pytest.approx(expected_any, abs=1e-12)


def test_unnormalised_rows_are_normalised_but_any_severe_uses_the_raw_probability():
    truth = {**_all_normal("1"), row_id("1", SPINAL, Level.L1_L2): MO}
    raw = score_lumbar(truth, _all_rows(["1"], (0.2, 0.2, 0.1)))
    normalised = score_lumbar(truth, _all_rows(["1"], (0.4, 0.4, 0.2)))
    for group in ("spinal", "foraminal", "subarticular"):
        assert raw[group] == pytest.approx(normalised[group], abs=1e-12)
    assert raw["any_severe_spinal"] == pytest.approx(-math.log(0.9), abs=1e-12)
    assert normalised["any_severe_spinal"] == pytest.approx(-math.log(0.8), abs=1e-12)


def test_any_severe_prediction_above_one_is_clipped():
    truth = {**_all_normal("1"), row_id("1", SPINAL, Level.L2_L3): SE}
    result = score_lumbar(truth, _all_rows(["1"], (0.0, 0.0, 5.0)))
    assert result["any_severe_spinal"] == pytest.approx(-math.log(1 - EPS), abs=1e-15)


def test_zero_probability_on_the_true_grade_costs_the_clipped_loss():
    result = score_lumbar(_all_normal("1"), _all_rows(["1"], (0.0, 1.0, 0.0)))
    assert result["spinal"] == pytest.approx(-math.log(EPS), rel=1e-12)


def test_a_row_of_zeros_is_read_as_uniform():
    result = score_lumbar(_all_normal("1"), _all_rows(["1"], (0.0, 0.0, 0.0)))
    assert result["foraminal"] == pytest.approx(math.log(3), abs=1e-12)


def test_ungraded_rows_are_not_scored():
    truth = _all_normal("1")
    skipped = row_id("1", Condition.LEFT_NEURAL_FORAMINAL_NARROWING, Level.L3_L4)
    del truth[skipped]
    rows = _all_rows(["1"], (0.8, 0.15, 0.05))
    before = score_lumbar(truth, rows)
    rows[skipped] = (0.0, 0.0, 1.0)  # confidently wrong, but there is no grade to be wrong about
    assert score_lumbar(truth, rows) == before


def test_truth_and_submission_files_score_end_to_end():
    truth = truth_from_train_csv(_train_csv({"1": dict.fromkeys(COLUMNS, "Normal/Mild")}))
    submission = parse_submission(_submission_csv(_all_rows(["1"], (0.8, 0.15, 0.05))))
    assert score_lumbar(truth, submission)["spinal"] == pytest.approx(-math.log(0.8))


# --- equality with sklearn on random data -------------------------------------------------


def _random_case(seed, n_studies=40, normalised=True):
    rng = np.random.default_rng(seed)
    grades = list(Grade)
    truth, submission = {}, {}
    for s in range(n_studies):
        for c in CONDITIONS:
            for lv in LEVELS:
                rid = row_id(str(1000 + s), c, lv)
                if rng.random() > 0.05:  # some rows ungraded
                    truth[rid] = grades[rng.choice(3, p=[0.6, 0.25, 0.15])]
                p = rng.random(3) ** 2
                if not normalised and rng.random() < 0.1:  # zero-probability cells and all-zero rows
                    p[rng.random(3) < 0.5] = 0.0
                submission[rid] = tuple(p / p.sum() if normalised else 0.9 * p / max(p.max(), 1e-300))
    for s in range(2):  # make sure every grade occurs in every group
        for c, grade in zip(CONDITIONS, [SE, MO, SE, MO, SE], strict=True):
            truth[row_id(str(1000 + s), c, Level.L1_L2)] = grade
    return truth, submission


def _kaggle_era_log_loss(y_true, y_pred, sample_weight, labels):
    """sklearn's `log_loss(eps="auto")` of 2023-24 (1.3/1.4), transcribed: clip to machine
    epsilon, a 1-D prediction becomes [1 - p, p], then rows are normalised to sum 1."""
    y_pred = np.asarray(y_pred, dtype=np.float64)
    eps = np.finfo(y_pred.dtype).eps
    y_pred = np.clip(y_pred, eps, 1 - eps)
    if y_pred.ndim == 1:
        y_pred = y_pred[:, np.newaxis]
    if y_pred.shape[1] == 1:
        y_pred = np.append(1 - y_pred, y_pred, axis=1)
    y_pred = y_pred / y_pred.sum(axis=1)[:, np.newaxis]
    onehot = np.array(y_true)[:, None] == np.array(labels)[None, :]
    loss = -(onehot * np.log(y_pred)).sum(axis=1)
    return np.average(loss, weights=sample_weight)


def _sklearn_reference(truth, submission, log_loss=_kaggle_era_log_loss):
    result = {}
    for group in Group:
        rids = [r for r in truth if split_row_id(r)[1].group is group]
        result[group.value] = log_loss(
            [truth[r].index for r in rids],
            np.array([submission[r] for r in rids]),
            sample_weight=[truth[r].weight for r in rids],
            labels=[0, 1, 2],
        )
    studies = sorted({split_row_id(r)[0] for r in truth if split_row_id(r)[1] is SPINAL})
    spinal = {s: [r for r in truth if r.startswith(s + "_spinal")] for s in studies}
    result["any_severe_spinal"] = log_loss(
        [int(any(truth[r] is SE for r in spinal[s])) for s in studies],
        np.array([max(submission[r][2] for r in spinal[s]) for s in studies]),
        sample_weight=[max(truth[r].weight for r in spinal[s]) for s in studies],
        labels=[0, 1],
    )
    result["score"] = np.mean(list(result.values()))
    return result


def test_the_transcribed_reference_is_sklearn_where_their_semantics_coincide():
    """Today's sklearn no longer renormalises; on rows that sum to 1 the two agree, which checks
    the transcription against the library itself."""
    truth, submission = _random_case(0, normalised=True)
    modern = _sklearn_reference(truth, submission, log_loss=sk_log_loss)
    for key, value in _sklearn_reference(truth, submission).items():
        assert modern[key] == pytest.approx(value, abs=1e-9), key


def test_values_are_clipped_before_rows_are_normalised():
    """[0, 5, 5] clips to [ε, 1-ε, 1-ε] and normalises to ≈ [ε/2, ½, ½]: normalising first
    would give ε for the true grade, a loss smaller by log 2."""
    result = score_lumbar(_all_normal("1"), _all_rows(["1"], (0.0, 5.0, 5.0)))
    assert result["spinal"] == pytest.approx(-math.log(EPS / (EPS + 2 * (1 - EPS))), rel=1e-12)
    assert EPS == np.finfo(np.float64).eps


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("normalised", [True, False], ids=["normalised", "unnormalised"])
def test_score_equals_sklearn_log_loss_on_random_data(seed, normalised):
    truth, submission = _random_case(seed, normalised=normalised)
    got = score_lumbar(truth, submission)
    expected = _sklearn_reference(truth, submission)
    assert got.keys() == {"score", "spinal", "foraminal", "subarticular", "any_severe_spinal"}
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key


# --- intervals ----------------------------------------------------------------------------


def _random_benchmark(n_studies, seed):
    """Truth with every grade present and a noisy but informative submission."""
    rng = np.random.default_rng(seed)
    truth, sub = {}, {}
    for i in range(n_studies):
        for c in CONDITIONS:
            for lv in LEVELS:
                rid = row_id(f"s{i}", c, lv)
                grade = [NM, MO, SE][rng.choice(3, p=[0.6, 0.25, 0.15])]
                truth[rid] = grade
                p = rng.dirichlet(np.ones(3))
                p[grade.index] += 1.0
                sub[rid] = tuple(float(x) for x in p / p.sum())
    return truth, sub


def test_intervals_keep_the_point_values_and_bracket_them():
    truth, sub = _random_benchmark(40, seed=1)
    plain = score_lumbar(truth, sub)
    out = score_lumbar_with_intervals(truth, sub, n_bootstrap=300, seed=0)
    assert {k: out[k] for k in plain} == plain
    assert out["bootstrap_unit"] == "study" and out["n_bootstrap"] == 300
    assert set(out["ci95"]) == set(plain)
    for term, (low, high) in out["ci95"].items():
        assert low < high, term
        assert low <= plain[term] <= high, term


def test_one_study_resampled_is_that_study_so_every_interval_is_the_point():
    """Every replicate draws the one study once: the replicate arithmetic must equal the metric's."""
    truth, sub = _random_benchmark(1, seed=2)
    point = score_lumbar(truth, sub)
    out = score_lumbar_with_intervals(truth, sub, n_bootstrap=20)
    for term, (low, high) in out["ci95"].items():
        assert low == pytest.approx(point[term], rel=1e-12) and high == pytest.approx(point[term], rel=1e-12), term


def test_intervals_are_seeded_and_narrow_with_more_studies():
    small, sub_small = _random_benchmark(15, seed=3)
    large, sub_large = _random_benchmark(240, seed=3)
    a = score_lumbar_with_intervals(small, sub_small, n_bootstrap=200, seed=7)
    assert a == score_lumbar_with_intervals(small, sub_small, n_bootstrap=200, seed=7)
    assert a["ci95"] != score_lumbar_with_intervals(small, sub_small, n_bootstrap=200, seed=8)["ci95"]
    b = score_lumbar_with_intervals(large, sub_large, n_bootstrap=200, seed=7)
    width = lambda r: r["ci95"]["score"][1] - r["ci95"]["score"][0]  # noqa: E731
    assert width(b) < width(a) / 2


def test_no_bootstrap_means_no_interval_and_a_negative_count_is_refused():
    truth, sub = _random_benchmark(3, seed=4)
    assert score_lumbar_with_intervals(truth, sub, n_bootstrap=0) == score_lumbar(truth, sub)
    with pytest.raises(ValueError, match="n_bootstrap"):
        score_lumbar_with_intervals(truth, sub, n_bootstrap=-1)
