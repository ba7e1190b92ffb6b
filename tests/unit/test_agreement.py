"""Agreement statistics equal the reference implementations (statsmodels, scikit-learn)."""

import math
from dataclasses import dataclass

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from services.common.contracts import ModelProvenance, Verdict
from services.common.protocols.kit.agreement import (
    _ordinal_distance,
    ai_vs_expert,
    ai_vs_expert_by_group,
    fleiss_kappa,
    group_by,
    krippendorff_alpha_weighted,
    label_presence_table,
    majority_verdict,
    provenance_key,
    reader_stats,
    verdict_shares,
)

A, M, D = Verdict.AGREE_ALL, Verdict.AGREE_MOSTLY, Verdict.DISAGREE


def _random_table(rng, n_sub, n_cat, n_rat):
    table = np.zeros((n_sub, n_cat), dtype=int)
    for i in range(n_sub):
        table[i] = np.bincount(rng.integers(0, n_cat, n_rat), minlength=n_cat)
    return table


@pytest.mark.parametrize("seed", range(200))
def test_fleiss_kappa_equals_statsmodels_on_random_tables(seed):
    rng = np.random.default_rng(seed)
    table = _random_table(rng, rng.integers(1, 60), rng.integers(2, 6), rng.integers(2, 18))
    if np.count_nonzero(table.sum(axis=0)) == 1:
        pytest.skip("single-category table: covered by the NaN test")
    assert fleiss_kappa(table) == pytest.approx(sm_fleiss_kappa(table, method="fleiss"), abs=1e-9)


def test_fleiss_kappa_of_the_wikipedia_example():
    table = np.array(
        [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
         [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    )
    assert fleiss_kappa(table) == pytest.approx(0.20993070442195522, abs=1e-12)


def test_perfect_agreement_across_categories_is_one():
    assert fleiss_kappa(np.array([[3, 0], [0, 3], [3, 0]])) == pytest.approx(1.0)


def test_kappa_is_nan_when_every_rating_is_in_one_category():
    assert math.isnan(fleiss_kappa(np.array([[3, 0], [3, 0], [3, 0]])))


@pytest.mark.parametrize(
    "table",
    [
        np.array([[2, 1], [1, 1]]),  # unequal raters per subject
        np.array([[1, 0], [0, 1]]),  # one rater
        np.array([[2, -1], [1, 0]]),
        np.array([[1.5, 1.5]]),
        np.zeros((0, 2)),
        np.array([3, 0]),
    ],
)
def test_kappa_rejects_tables_it_is_not_defined_for(table):
    with pytest.raises(ValueError):
        fleiss_kappa(table)


def test_label_presence_table_counts_absent_and_present_readers_per_study():
    sets = [
        [frozenset({"cardiomegaly"}), frozenset(), frozenset({"cardiomegaly", "pneumothorax"})],
        [frozenset(), frozenset(), frozenset()],
    ]
    assert label_presence_table(sets, "cardiomegaly").tolist() == [[1, 2], [3, 0]]
    assert label_presence_table([], "cardiomegaly").shape == (0, 2)


def test_presence_table_feeds_kappa_like_statsmodels():
    rng = np.random.default_rng(7)
    sets = [[frozenset({"x"} if rng.random() < 0.3 + 0.4 * (i % 2) else set()) for _ in range(3)]
            for i in range(100)]
    table = label_presence_table(sets, "x")
    assert fleiss_kappa(table) == pytest.approx(sm_fleiss_kappa(table), abs=1e-9)


def test_verdict_shares_cover_every_option_and_sum_to_one():
    shares = verdict_shares([A, A, M, "agree_all"])
    assert shares == {A: 0.75, M: 0.25, D: 0.0}


def test_verdict_shares_of_no_votes_are_zero():
    assert verdict_shares([]) == {A: 0.0, M: 0.0, D: 0.0}


@dataclass
class Vote:
    study_id: str
    reader_id: str
    verdict: Verdict
    seconds_spent: float | None = None


def test_majority_needs_more_than_half_of_at_least_two_votes():
    assert majority_verdict([A, A, D]) is A
    assert majority_verdict([A, M, D]) is None
    assert majority_verdict([A, M]) is None
    assert majority_verdict([A]) is None


def test_reader_stats_counts_reads_majority_agreement_and_median_time():
    votes = [
        Vote("s1", "r1", A, 30), Vote("s1", "r2", A, 50), Vote("s1", "r3", D, 10),
        Vote("s2", "r1", M, 70), Vote("s2", "r2", D, None), Vote("s2", "r3", D, 20),
        Vote("s3", "r1", A, 40), Vote("s3", "r2", M, float("nan")), Vote("s3", "r3", D, 30),
    ]
    stats = reader_stats(votes)
    assert stats["r1"].reads == 3
    assert stats["r1"].majority_agreement == 0.5  # s1 agrees, s2 not, s3 has no majority
    assert stats["r1"].median_seconds == 40
    assert stats["r2"].majority_agreement == 1.0
    assert stats["r2"].median_seconds == 50  # untimed and NaN reads are ignored
    assert stats["r3"].majority_agreement == 0.5
    assert stats["r3"].median_seconds == 20


def test_reader_without_any_majority_study_has_no_agreement_figure():
    stats = reader_stats([Vote("s1", "r1", A), Vote("s1", "r2", D), Vote("s2", "r1", A)])
    assert stats["r1"] == type(stats["r1"])(reads=2, majority_agreement=None, median_seconds=None)


LABELS = ["atelectasis", "cardiomegaly", "effusion", "pneumothorax", "fracture"]


def _random_rows(rng, n):
    def draw(p):
        return frozenset(label for label in LABELS if rng.random() < p)
    return [(draw(0.3), draw(0.25)) for _ in range(n)]


@pytest.mark.parametrize("seed", range(50))
def test_ai_vs_expert_equals_sklearn_precision_recall_f1(seed):
    rng = np.random.default_rng(seed)
    rows = _random_rows(rng, int(rng.integers(1, 40)))
    result = ai_vs_expert(rows, LABELS)
    for label in LABELS:
        y_true = [label in c for _, c in rows]
        y_pred = [label in s for s, _ in rows]
        got = result[label]
        for ours, reference in [
            (got.precision, precision_score), (got.recall, recall_score), (got.f1, f1_score)
        ]:
            assert ours == pytest.approx(reference(y_true, y_pred, zero_division=0), abs=1e-9)


def test_ai_vs_expert_counts_confirmed_removed_and_added():
    rows = [
        (frozenset({"cardiomegaly", "effusion"}), frozenset({"cardiomegaly"})),
        (frozenset({"cardiomegaly"}), frozenset({"cardiomegaly", "pneumothorax"})),
        (frozenset(), frozenset()),
    ]
    result = ai_vs_expert(rows)
    assert list(result) == ["cardiomegaly", "effusion", "pneumothorax"]
    assert (result["cardiomegaly"].confirmed, result["cardiomegaly"].removed) == (2, 0)
    assert (result["effusion"].removed, result["effusion"].precision) == (1, 0.0)
    assert (result["pneumothorax"].added, result["pneumothorax"].recall) == (1, 0.0)


def test_label_nobody_suggested_or_found_scores_zero_not_nan():
    result = ai_vs_expert([(frozenset(), frozenset())], ["fracture"])["fracture"]
    assert (result.precision, result.recall, result.f1) == (0.0, 0.0, 0.0)


def test_group_helpers_split_rows_by_provenance_and_tier():
    llm = ModelProvenance(backend="llm", model="phi-4-reasoning", prompt_version="v3")
    rules = ModelProvenance(backend="rules")
    items = [
        (llm, "hard", (frozenset({"effusion"}), frozenset({"effusion"}))),
        (rules, "easy", (frozenset({"effusion"}), frozenset())),
        (llm, "easy", (frozenset(), frozenset({"effusion"}))),
    ]
    by_model = group_by(items, lambda item: provenance_key(item[0]))
    assert list(by_model) == [("llm", "phi-4-reasoning", "v3"), ("rules", "", "")]
    by_tier = group_by(items, lambda item: item[1])
    tables = ai_vs_expert_by_group({k: [row for *_, row in v] for k, v in by_tier.items()})
    assert tables["hard"]["effusion"].f1 == 1.0
    assert tables["easy"]["effusion"].f1 == 0.0


def test_service_code_does_not_import_the_reference_libraries():
    """statsmodels and scikit-learn are test-only dependencies; the service must run without."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import services.common.protocols.kit.agreement, services.common.protocols.cxr.scoring\n"
        "import services.common.protocols.lumbar.scoring\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('sklearn', 'statsmodels', 'scipy')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _alpha_of_one(o: np.ndarray, level: str) -> float:
    """Krippendorff's alpha from one coincidence matrix, as it was computed replicate by replicate."""
    n_v = o.sum(axis=0)
    n = n_v.sum()
    if n <= 1:
        return float("nan")
    expected = (np.outer(n_v, n_v) - np.diag(n_v)) / (n - 1)
    distance = _ordinal_distance(n_v) if level == "ordinal" else 1.0 - np.eye(len(n_v))
    disagreement = float((expected * distance).sum())
    if disagreement == 0:
        return float("nan")
    return 1.0 - float((o * distance).sum()) / disagreement


@pytest.mark.parametrize("level", ["nominal", "ordinal"])
@pytest.mark.parametrize("values", [2, 3, 5])
def test_bootstrap_alphas_at_once_equal_one_replicate_at_a_time_bit_for_bit(level, values):
    rng = np.random.default_rng(values)
    counts = rng.integers(0, 4, size=(300, values)).astype(float)
    counts[:5] = 0
    counts[5] = 0
    counts[5, 0] = 3  # a unit whose readers all agree
    weights = rng.integers(0, 3, size=(200, 300)).astype(float)
    weights[0] = 0  # a replicate that drew nothing pairable
    weights[1] = 0
    weights[1, 5] = 1  # one that drew only the unanimous unit: no expected disagreement
    pairable = np.maximum(counts.sum(axis=1), 2)
    per_unit = (counts[:, :, None] * counts[:, None, :] - counts[:, :, None] * np.eye(values)) \
        / (pairable - 1)[:, None, None]
    coincidences = np.einsum("bu,uvk->bvk", weights, per_unit)
    one_by_one = np.array([_alpha_of_one(o, level) for o in coincidences])
    assert np.array_equal(krippendorff_alpha_weighted(counts, weights, level), one_by_one, equal_nan=True)
    assert np.isnan(one_by_one[:2]).all() and np.isfinite(one_by_one[2:]).any()
