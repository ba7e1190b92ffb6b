"""The card's agreement figures computed for every label at once equal each label's own computation
bit for bit (a release's dataset card must not change by a single byte), and the shortcuts they take
are only taken where they are exact."""

from __future__ import annotations

import random

import numpy as np
import pytest

from services.common.contracts import Verdict
from services.common.protocols.cxr.reporting import card_agreement, kappa_units, presence_tables
from services.common.protocols.kit import agreement
from services.common.protocols.kit.agreement import (
    fleiss_kappa_weighted,
    kappa_and_alpha_weighted,
    krippendorff_alpha_weighted,
    verdict_shares,
)
from services.common.protocols.kit.bootstrap import patient_resample_weights, percentile_interval
from services.common.protocols.kit.decision import VoteView, effective_labels


def _tables(rng: np.random.Generator, subjects: int, raters: int, labels: int) -> list[np.ndarray]:
    """Present/absent tables with the awkward cases: a label no one marked (kappa NaN) and a subject
    every reader marked."""
    tables = []
    for j in range(labels):
        present = rng.binomial(raters, rng.uniform(0.02, 0.6), size=subjects)
        if j == 0:
            present[:] = 0
        elif j == 1:
            present[0] = raters
        tables.append(np.column_stack((raters - present, present)))
    return tables


def _assert_each_tables_own(tables: list[np.ndarray], weights: np.ndarray) -> None:
    together = kappa_and_alpha_weighted(tables, weights)
    assert len(together) == len(tables)
    for table, (kappa, alpha) in zip(tables, together, strict=True):
        assert np.array_equal(kappa, fleiss_kappa_weighted(table, weights), equal_nan=True)
        assert np.array_equal(alpha, krippendorff_alpha_weighted(table, weights), equal_nan=True)


@pytest.mark.parametrize("raters", [2, 3, 4, 5])
@pytest.mark.parametrize("seed", range(4))
def test_kappa_and_alpha_of_every_table_at_once_equal_each_tables_own_bit_for_bit(raters, seed):
    rng = np.random.default_rng(seed)
    subjects = int(rng.integers(5, 400))
    tables = _tables(rng, subjects, raters, 6)
    patients = [f"P{int(i / rng.uniform(1, 3))}" for i in range(subjects)]
    weights = patient_resample_weights(patients, 300, seed)  # column-major, as a report gets them
    weights[0] = 0  # a replicate that drew no one
    _assert_each_tables_own(tables, weights)
    _assert_each_tables_own(tables, np.ascontiguousarray(weights))  # row-major
    _assert_each_tables_own(tables, np.ones((1, subjects)))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf x 0, on either path
@pytest.mark.parametrize("weights", [
    lambda w: w * 0.5,  # not whole
    lambda w: np.where(w == 1, np.nan, w),
    lambda w: np.where(w == 1, np.inf, w),
    lambda w: w * 2.0**49,  # whole, but sums pass 2**53
    lambda w: w[:0],  # no replicates
])
def test_weights_a_matrix_product_would_not_sum_exactly_take_each_tables_own_path(weights):
    rng = np.random.default_rng(11)
    tables = _tables(rng, 120, 3, 4)
    _assert_each_tables_own(tables, weights(patient_resample_weights([f"P{i // 2}" for i in range(120)], 50, 3)))


def test_a_panel_of_three_is_summed_in_one_product_and_a_panel_of_four_per_table(monkeypatch):
    """3 readers: every coincidence count over (3 - 1) is whole, so no per-table einsum; 4 readers
    split 2 / 2 give 4 / 3, so each table keeps the per-table order its figures are defined by."""
    rng = np.random.default_rng(5)
    weights = patient_resample_weights([f"P{i // 2}" for i in range(200)], 100, 0)
    calls = []
    monkeypatch.setattr(agreement, "fleiss_kappa_weighted", lambda *a: calls.append("kappa") or np.zeros(100))
    monkeypatch.setattr(agreement, "krippendorff_alpha_weighted", lambda *a: calls.append("alpha") or np.zeros(100))
    kappa_and_alpha_weighted(_tables(rng, 200, 3, 5), weights)
    assert calls == []
    four = _tables(rng, 200, 4, 5)
    four[2][0] = (2, 2)
    kappa_and_alpha_weighted(four, weights)
    assert calls == ["kappa", "alpha"] * 5


def test_the_whole_number_product_is_exact_or_refused():
    rng = np.random.default_rng(2)
    w = rng.integers(0, 5, size=(40, 30)).astype(float)
    x = rng.integers(0, 7, size=(30, 6)).astype(float)
    exact = (w.astype(np.int64) @ x.astype(np.int64)).astype(float)
    assert np.array_equal(agreement._whole_number_product(w, x), exact)
    assert np.array_equal(agreement._whole_number_product(np.asfortranarray(w), x), exact)
    assert agreement._whole_number_product(w, x / 3) is None
    assert agreement._whole_number_product(w + 0.25, x) is None
    assert agreement._whole_number_product(w * 2.0**48, x) is None  # 4 * 2**48 * 6 * 30 > 2**53
    assert agreement._whole_number_product(w[:0], x) is None


LABELS = ["atelectasis", "cardiomegaly", "pleural_effusion", "pneumothorax", "fracture"]


def _rows(seed: int, n: int, readers: int = 3) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    studies, votes = [], []
    for i in range(n):
        suggested = sorted(rng.sample(LABELS, rng.randint(0, 3)))
        studies.append({"study_id": f"S{i}", "patient_id": f"P{i // 2}", "suggested": suggested,
                        "accepted": rng.random() < 0.6})
        for r in rng.sample(range(9), readers if rng.random() < 0.9 else readers - 1):
            removed = [x for x in suggested if rng.random() < 0.2] + (["fracture"] if rng.random() < 0.1 else [])
            added = [x for x in LABELS if rng.random() < 0.08]  # sometimes one already suggested
            votes.append({"study_id": f"S{i}", "reader_id": f"R{r}", "added_labels": added,
                          "removed_labels": removed, "seconds_spent": 10.0,
                          "verdict": rng.choice(["agree_all", "agree_mostly", "disagree"])})
    return studies, votes


@pytest.mark.parametrize("readers", [3, 4])
def test_the_cards_intervals_equal_each_labels_own_computation(readers):
    """What the card prints is what one label at a time gave: the figures a release's
    dataset_card.json carries, compared with == (floats bit for bit)."""
    studies, votes = _rows(readers, 300, readers)
    card = card_agreement(studies, votes, LABELS, n_bootstrap=400)
    units = kappa_units(studies, votes)
    weights = patient_resample_weights([p for _, p in units], 400, 0)
    tables = presence_tables([x for x, _ in units], LABELS)
    assert card["fleiss_kappa_ci95"] == {label: percentile_interval(fleiss_kappa_weighted(tables[label], weights))
                                         for label in LABELS}
    assert card["krippendorff_alpha_ci95"] == {
        label: percentile_interval(krippendorff_alpha_weighted(tables[label], weights)) for label in LABELS}
    assert all(card["fleiss_kappa_ci95"][label] for label in LABELS[1:])


def test_kappa_units_give_each_readers_effective_labels():
    studies, votes = _rows(1, 80)
    by_study: dict[str, list[dict]] = {}
    for v in votes:
        by_study.setdefault(v["study_id"], []).append(v)
    expected = [[effective_labels(VoteView(v["reader_id"], Verdict(v["verdict"]), frozenset(v["added_labels"]),
                                           frozenset(v["removed_labels"])), s["suggested"])
                 for v in by_study[s["study_id"]]] for s in studies]
    got = [sets for sets, _ in kappa_units(studies, votes)]
    assert got == [sets for sets in expected if len(sets) == 3]
    assert any(set(v["added_labels"]) & set(s["suggested"]) for s in studies for v in by_study[s["study_id"]])


def test_verdict_shares_still_refuse_an_unknown_verdict():
    with pytest.raises(ValueError):
        verdict_shares(["agree_all", "maybe"])


def test_patient_weights_keep_their_values_and_column_major_layout():
    """A matrix-vector product sums in an order that follows the weights' layout: the bootstrap's
    weights keep the layout (and values) the reports' figures were computed with."""
    patients = [f"P{(7 * i) % 45}" for i in range(100)]
    weights = patient_resample_weights(patients, 60, 9)
    ids, index = np.unique(patients, return_inverse=True)
    draws = np.random.default_rng(9).integers(0, len(ids), size=(60, len(ids)))
    per_patient = np.stack([np.bincount(row, minlength=len(ids)) for row in draws])
    assert np.array_equal(weights, per_patient[:, index]) and weights.dtype == np.float64
    assert weights.flags.f_contiguous


def test_an_agreement_report_before_any_decision_has_no_figures_and_no_error():
    """No decided study yet (a curator asks early): every figure is absent, not a crash in the
    AI-versus-expert intervals (reshaping no rows to rows x -1 raised ValueError)."""
    from services.common.protocols.cxr.reporting import agreement_report

    report = agreement_report([], [], LABELS, n_bootstrap=20)
    assert report["studies"] == {"decided": 0, "accepted": 0, "in_kappa": 0, "votes": 0}
    overall = report["ai_vs_expert"]["overall"]
    assert overall["studies"] == 0 and overall["ci95"]["cardiomegaly"] == {"precision": None, "recall": None}
    assert report["fleiss_kappa_ci95"]["cardiomegaly"] is None and report["krippendorff_alpha"]["fracture"] is None
    assert report["ai_vs_expert"]["by_model"] == [] and report["readers"] == {}
