"""CXR holdout scoring: metrics equal scikit-learn, file errors are clear and never leak truth."""

import inspect
import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, recall_score, roc_auc_score

from services.common.protocols.cxr.scoring import (
    METRIC_VERSION,
    METRICS,
    PredictionFileError,
    Predictions,
    auroc,
    parse_predictions,
    receipt,
    replicate_metrics,
    resample_counts,
    score_cxr,
    unscorable_labels,
)

LABELS = [
    "atelectasis", "cardiomegaly", "consolidation", "pulmonary_edema", "pleural_effusion",
    "pneumothorax", "lung_nodule_mass", "ild_fibrosis", "emphysema", "fracture",
    "mediastinal_hilar", "support_devices",
]
HOLDOUT = [f"study-{i:03d}" for i in range(100)]


def _truth(seed=0, prevalence=0.3):
    """Random truth in which every label has both classes."""
    rng = np.random.default_rng(seed)
    y = rng.random((len(HOLDOUT), len(LABELS))) < prevalence
    y[0], y[1] = True, False
    return {s: frozenset(lb for lb, on in zip(LABELS, row, strict=True) if on)
            for s, row in zip(HOLDOUT, y, strict=True)}


def _csv(study_ids, probabilities, labels=LABELS, header=None):
    lines = [",".join(header or ["study_id", *labels])]
    for s, row in zip(study_ids, probabilities, strict=True):
        lines.append(",".join([s, *(repr(float(v)) for v in row)]))
    return "\n".join(lines) + "\n"


def _random_probabilities(seed, n=len(HOLDOUT), ties=False):
    p = np.random.default_rng(seed).random((n, len(LABELS)))
    return np.round(p, 1) if ties else p


def _matrix(truth, labels=LABELS):
    return np.array([[lb in truth[s] for lb in labels] for s in sorted(truth)])


# --- parsing: valid files -----------------------------------------------------------------


def test_parse_reads_every_probability_in_label_order():
    p = _random_probabilities(1)
    preds = parse_predictions(_csv(HOLDOUT, p), LABELS, HOLDOUT)
    assert preds.study_ids == tuple(HOLDOUT) and preds.label_ids == tuple(LABELS)
    np.testing.assert_array_equal(preds.probabilities, p)


def test_parse_accepts_reordered_columns_crlf_bom_blank_lines_and_spaces():
    text = "\ufeffb,study_id,a\r\n 0.25 ,s1, 1\r\n\r\n5e-1,s2,0\r\n\r\n"
    preds = parse_predictions(text, ["a", "b"], ["s1", "s2"])
    np.testing.assert_array_equal(preds.matrix(["s1", "s2"], ["a", "b"]), [[1, 0.25], [0, 0.5]])


def test_parsed_probabilities_cannot_be_modified():
    preds = parse_predictions("study_id,a\ns1,0.5\n", ["a"], ["s1"])
    with pytest.raises(ValueError):
        preds.probabilities[0, 0] = 1.0


# --- parsing: malformed files -------------------------------------------------------------

GOOD = _random_probabilities(2)


def _with_cell(row, col, value):
    lines = _csv(HOLDOUT, GOOD).splitlines()
    cells = lines[row + 1].split(",")
    cells[col + 1] = value
    lines[row + 1] = ",".join(cells)
    return "\n".join(lines)


MALFORMED = {
    "empty": ("", "empty"),
    "whitespace only": ("  \n\n ", "empty"),
    "only a byte-order mark": ("\ufeff", "empty"),
    "only commas": (",,,\n", "empty"),
    "header only": (_csv([], []), "missing holdout studies: 100 ('study-000', 'study-001'"),
    "missing column": (
        _csv(HOLDOUT, GOOD[:, 1:], LABELS[1:]), "missing columns: 1 ('atelectasis')"
    ),
    "extra column": (
        _csv(HOLDOUT, np.c_[GOOD, GOOD[:, :1]], [*LABELS, "no_finding"]),
        "unexpected columns: 1 ('no_finding')",
    ),
    "repeated column": (
        _csv(HOLDOUT, np.c_[GOOD, GOOD[:, :1]], [*LABELS, "fracture"]),
        "repeated column names: 1 ('fracture')",
    ),
    "no study_id column": (
        _csv(HOLDOUT, GOOD, header=["id", *LABELS]), "missing columns: 1 ('study_id')"
    ),
    "short line": (
        _csv(HOLDOUT, GOOD).replace("study-007,", "study-007,0.1,", 1),
        "lines with the wrong number of fields: 1 (line 9 has 14 fields, expected 13)",
    ),
    "repeated study": (
        _csv([*HOLDOUT, "study-004"], np.r_[GOOD, GOOD[:1]]), "repeated study ids: 1 ('study-004')"
    ),
    "unknown study": (
        _csv([*HOLDOUT, "study-999"], np.r_[GOOD, GOOD[:1]]),
        "study ids not in the holdout set: 1 ('study-999')",
    ),
    "missing studies": (
        _csv(HOLDOUT[7:], GOOD[7:]),
        "missing holdout studies: 7 ('study-000', 'study-001', 'study-002', 'study-003',"
        " 'study-004', ...)",
    ),
    "empty study id": (
        _csv(["", *HOLDOUT], np.r_[GOOD[:1], GOOD]), "rows with an empty study_id: 1"
    ),
    "NaN": (_with_cell(3, 2, "nan"), "values that are NaN: 1 (line 5, column 'consolidation'"),
    "infinity": (_with_cell(3, 2, "-inf"), "values that are infinite: 1 (line 5"),
    "overflow": (_with_cell(3, 2, "1e999"), "values that are infinite: 1"),
    "above one": (_with_cell(0, 0, "1.01"), "values that are outside [0, 1]: 1 (line 2"),
    "below zero": (_with_cell(0, 0, "-0.1"), "values that are outside [0, 1]: 1"),
    "words": (_with_cell(0, 0, "high"), "values that are not numbers: 1 (line 2, column"),
    "empty cell": (_with_cell(0, 0, ""), "values that are not numbers: 1"),
    "underscored number": (_with_cell(0, 0, "0.1_5"), "values that are not numbers: 1"),
    "two dots": (_with_cell(0, 0, "0.5.1"), "values that are not numbers: 1"),
    "unclosed quote": (_csv(HOLDOUT, GOOD) + '"study-1,0.5\n', "not a valid CSV file"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_file_is_rejected_with_a_message_naming_the_problem(case):
    text, expected = MALFORMED[case]
    with pytest.raises(PredictionFileError) as error:
        parse_predictions(text, LABELS, HOLDOUT)
    assert expected in str(error.value)


def test_all_problems_in_a_file_are_reported_together():
    text = _with_cell(0, 0, "x").replace("study-005,", "study-004,", 1)
    with pytest.raises(PredictionFileError) as error:
        parse_predictions(text, LABELS, HOLDOUT)
    message = str(error.value)
    assert "not numbers" in message and "repeated study ids" in message
    assert "missing holdout studies: 1 ('study-005')" in message


def test_many_bad_values_are_counted_but_only_five_are_shown():
    p = GOOD.copy()
    p[:, 0] = 2.0
    with pytest.raises(PredictionFileError) as error:
        parse_predictions(_csv(HOLDOUT, p), LABELS, HOLDOUT)
    message = str(error.value)
    assert "outside [0, 1]: 100 (" in message and message.count("line ") == 5


# --- no error reveals truth ---------------------------------------------------------------

POSITIVE_MARK = "POSITIVE"


def _recognisable_holdout():
    """Holdout whose positive studies are named so any leak of them is visible in text."""
    ids = [f"{POSITIVE_MARK}-{i:03d}" if i % 4 == 0 else f"neg-{i:03d}" for i in range(40)]
    truth = {s: frozenset({"cardiomegaly"} if s.startswith(POSITIVE_MARK) else ()) for s in ids}
    return ids, truth


def test_parsing_cannot_see_the_truth():
    assert list(inspect.signature(parse_predictions).parameters) == [
        "csv_text", "label_ids", "expected_study_ids"
    ]


def _ids_the_file_is_wrong_about(text, ids):
    """Holdout ids that are repeated in the file or lack a well-formed row: public facts."""
    first_cells = [line.split(",")[0] for line in text.splitlines()[1:]]
    well_formed = {
        line.split(",")[0] for line in text.splitlines()[1:] if line.count(",") == len(LABELS)
    }
    repeated = {s for s in first_cells if first_cells.count(s) > 1}
    return repeated | (set(ids) - well_formed)


@pytest.mark.parametrize("case", MALFORMED)
def test_no_error_names_a_positive_study_unless_the_file_itself_is_wrong_about_it(case):
    ids, truth = _recognisable_holdout()
    text = MALFORMED[case][0]
    for old, new in zip(HOLDOUT, ids, strict=False):
        text = text.replace(old + ",", new + ",")
    with pytest.raises(PredictionFileError) as error:
        parse_predictions(text, LABELS, ids)
    message = str(error.value)
    positives = {s for s, labels in truth.items() if labels}
    named_positives = {s for s in positives if s in message}
    assert named_positives <= _ids_the_file_is_wrong_about(text, ids)
    lowered = message.lower().replace(POSITIVE_MARK.lower() + "-", "")
    assert "positive" not in lowered and "truth" not in lowered


def test_missing_study_message_names_missing_ids_in_id_order_whatever_the_truth():
    ids, _ = _recognisable_holdout()
    kept = ids[10:]
    text = _csv(kept, _random_probabilities(3, len(kept)))
    message = str(pytest.raises(PredictionFileError, parse_predictions, text, LABELS, ids).value)
    named = sorted(ids[:10])[:5]
    assert f"missing holdout studies: 10 ({', '.join(map(repr, named))}, ...)" in message
    assert all(s not in message for s in sorted(ids[:10])[5:])


def test_score_reports_no_positive_counts_and_its_errors_name_no_studies():
    ids, truth = _recognisable_holdout()
    preds = parse_predictions(_csv(ids, _random_probabilities(4, len(ids))), LABELS, ids)
    result = score_cxr(truth, preds, LABELS, n_bootstrap=20)
    assert "n_positive" not in repr(result) and "positive" not in repr(result).lower()
    assert set(result["per_label"]["cardiomegaly"]) == set(METRICS)
    other = {s: frozenset() for s in ids[:-1]}
    with pytest.raises(ValueError) as error:
        score_cxr(other, preds, LABELS)
    assert not any(s in str(error.value) for s in ids)


# --- metrics equal scikit-learn -----------------------------------------------------------


@pytest.mark.parametrize("seed", range(100))
def test_auroc_equals_sklearn_including_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 80))
    y = rng.random(n) < rng.uniform(0.05, 0.95)
    y[0], y[1] = True, False
    scores = np.round(rng.random(n), int(rng.integers(0, 3)))
    assert auroc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-9)


def test_auroc_of_one_class_is_nan():
    assert math.isnan(auroc(np.array([True, True]), np.array([0.1, 0.9])))


@pytest.mark.parametrize("seed", range(20))
def test_score_equals_sklearn_per_label_and_macro(seed):
    truth = _truth(seed)
    p = _random_probabilities(seed + 100, ties=seed % 2 == 0)  # rounded: ties and exact 0.5s
    preds = parse_predictions(_csv(HOLDOUT, p), LABELS, HOLDOUT)
    result = score_cxr(truth, preds, LABELS, n_bootstrap=0)
    y, called = _matrix(truth), p >= 0.5
    for j, label in enumerate(LABELS):
        got = result["per_label"][label]
        assert got["auroc"] == pytest.approx(roc_auc_score(y[:, j], p[:, j]), abs=1e-9)
        assert got["sensitivity"] == pytest.approx(recall_score(y[:, j], called[:, j]), abs=1e-9)
        assert got["specificity"] == pytest.approx(
            recall_score(y[:, j], called[:, j], pos_label=False), abs=1e-9
        )
        assert got["f1"] == pytest.approx(f1_score(y[:, j], called[:, j]), abs=1e-9)
    assert result["macro"]["auroc"] == pytest.approx(roc_auc_score(y, p, average="macro"), abs=1e-9)
    assert result["macro"]["f1"] == pytest.approx(f1_score(y, called, average="macro"), abs=1e-9)
    assert result["macro"]["sensitivity"] == pytest.approx(
        recall_score(y, called, average="macro"), abs=1e-9
    )


def test_a_probability_of_exactly_one_half_is_a_positive_call():
    truth = {"s1": frozenset({"a"}), "s2": frozenset()}
    preds = Predictions(("s1", "s2"), ("a",), np.array([[0.5], [0.4999999]]))
    result = score_cxr(truth, preds, ["a"], n_bootstrap=0)["per_label"]["a"]
    assert (result["sensitivity"], result["specificity"], result["f1"]) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("seed", range(3))
def test_each_bootstrap_replicate_equals_sklearn_on_the_resampled_studies(seed):
    truth = _truth(seed, prevalence=0.1)
    y = _matrix(truth)
    p = _random_probabilities(seed, ties=True)
    counts = resample_counts(len(HOLDOUT), 12, seed)
    reps = replicate_metrics(y, p, counts)
    for b in range(12):
        idx = np.repeat(np.arange(len(HOLDOUT)), counts[b].astype(int))
        yb, pb = y[idx], p[idx]
        for j in range(len(LABELS)):
            if yb[:, j].all() or not yb[:, j].any():
                assert math.isnan(reps["auroc"][b, j])
                continue
            assert reps["auroc"][b, j] == pytest.approx(roc_auc_score(yb[:, j], pb[:, j]), abs=1e-9)
            assert reps["f1"][b, j] == pytest.approx(f1_score(yb[:, j], pb[:, j] >= 0.5), abs=1e-9)
            assert reps["sensitivity"][b, j] == pytest.approx(
                recall_score(yb[:, j], pb[:, j] >= 0.5), abs=1e-9
            )
            assert reps["specificity"][b, j] == pytest.approx(
                recall_score(yb[:, j], pb[:, j] >= 0.5, pos_label=False), abs=1e-9
            )


def test_resamples_draw_every_study_count_exactly_n_times_and_are_seeded():
    counts = resample_counts(100, 50, seed=3)
    assert counts.shape == (50, 100) and (counts.sum(axis=1) == 100).all()
    np.testing.assert_array_equal(counts, resample_counts(100, 50, seed=3))
    assert not np.array_equal(counts, resample_counts(100, 50, seed=4))


def test_intervals_are_seeded_ordered_and_bracket_typical_values():
    truth = _truth(5)
    preds = parse_predictions(_csv(HOLDOUT, _random_probabilities(6)), LABELS, HOLDOUT)
    first = score_cxr(truth, preds, LABELS, n_bootstrap=200, seed=1)
    assert first == score_cxr(truth, preds, LABELS, n_bootstrap=200, seed=1)
    assert first["ci95"] != score_cxr(truth, preds, LABELS, n_bootstrap=200, seed=2)["ci95"]
    for label in LABELS:
        for metric in METRICS:
            low, high = first["ci95"]["per_label"][label][metric]
            assert 0.0 <= low <= high <= 1.0
    low, high = first["ci95"]["macro"]["auroc"]
    assert low <= first["macro"]["auroc"] <= high
    assert first["metric_version"] == METRIC_VERSION and first["n_studies"] == 100


# --- labels with one class ----------------------------------------------------------------


@pytest.mark.parametrize("missing_class", ["no positives", "no negatives"])
def test_single_class_label_is_unscored_the_same_way_whichever_class_is_missing(missing_class):
    truth = _truth(11)
    for s in HOLDOUT:
        has = missing_class == "no negatives"
        truth[s] = truth[s] | {"fracture"} if has else truth[s] - {"fracture"}
    preds = parse_predictions(_csv(HOLDOUT, _random_probabilities(12)), LABELS, HOLDOUT)
    result = score_cxr(truth, preds, LABELS, n_bootstrap=50)
    assert result["per_label"]["fracture"] == dict.fromkeys(METRICS)
    assert result["ci95"]["per_label"]["fracture"] == dict.fromkeys(METRICS)
    others = [lb for lb in LABELS if lb != "fracture"]
    expected = np.mean([result["per_label"][lb]["auroc"] for lb in others])
    assert result["macro"]["auroc"] == pytest.approx(expected, abs=1e-12)
    assert unscorable_labels(truth, LABELS) == ["fracture"]


def test_release_check_finds_no_unscorable_labels_in_a_good_holdout():
    assert unscorable_labels(_truth(0), LABELS) == []


# --- receipts -----------------------------------------------------------------------------


def test_receipt_is_a_stable_sha256_that_changes_with_every_input():
    base = receipt(b"study_id,a\n", "cxr-2026.1", METRIC_VERSION)
    assert len(base) == 64 and int(base, 16) >= 0
    assert base == receipt(b"study_id,a\n", "cxr-2026.1", METRIC_VERSION)
    assert base != receipt(b"study_id,b\n", "cxr-2026.1", METRIC_VERSION)
    assert base != receipt(b"study_id,a\n", "cxr-2026.2", METRIC_VERSION)
    assert base != receipt(b"study_id,a\n", "cxr-2026.1", "cxr-holdout/2")


def test_receipt_fields_cannot_be_shifted_into_one_another():
    assert receipt(b"ab", "c", "d") != receipt(b"a", "bc", "d")
    assert receipt(b"", "1.0", "2") != receipt(b"", "1.", "02")
