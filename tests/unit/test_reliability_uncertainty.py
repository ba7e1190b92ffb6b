"""Krippendorff's alpha equals the `krippendorff` package, kappa intervals resample patients, and
holdout scores and AI-vs-expert figures carry patient-bootstrap intervals."""

from __future__ import annotations

import random

import krippendorff
import numpy as np
import pytest
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from services.common.protocols.cxr.reporting import agreement_report
from services.common.protocols.cxr.scoring import Predictions, score_cxr
from services.common.protocols.kit.agreement import (
    fleiss_kappa_weighted,
    krippendorff_alpha,
    krippendorff_alpha_weighted,
)
from services.common.protocols.kit.bootstrap import patient_resample_weights, percentile_interval
from services.common.protocols.lumbar.consensus import ordinal_alpha
from services.common.protocols.lumbar.consensus_rule import CellRead
from services.common.protocols.lumbar.grid import CELL_IDS, Grade, cell_of
from tests.unit.test_consensus_reporting import LABELS, effective, synthetic


def _value_counts(rng: np.random.Generator, units: int, values: int, max_raters: int = 5) -> np.ndarray:
    probs = rng.dirichlet(np.ones(values))
    return np.array([rng.multinomial(rng.integers(1, max_raters + 1), probs) for _ in range(units)])


@pytest.mark.parametrize("level", ["nominal", "ordinal"])
@pytest.mark.parametrize("seed", range(6))
def test_alpha_equals_the_krippendorff_package(level, seed):
    rng = np.random.default_rng(seed)
    counts = _value_counts(rng, 50, 2 if level == "nominal" else 3)
    counts[0] = [2] + [0] * (counts.shape[1] - 1)  # at least one pairable unit, as the package requires
    expected = krippendorff.alpha(value_counts=counts, level_of_measurement=level)
    assert krippendorff_alpha(counts, level) == pytest.approx(expected, abs=1e-9)


def test_weighted_kappa_and_alpha_equal_the_references_on_the_repeated_rows():
    rng = np.random.default_rng(3)
    table = rng.multinomial(3, [0.7, 0.3], size=30)
    weights = rng.integers(0, 3, size=(4, 30))
    for w in weights:
        repeated = np.repeat(table, w, axis=0)
        assert fleiss_kappa_weighted(table, w[None])[0] == pytest.approx(sm_fleiss_kappa(repeated), abs=1e-9)
        assert krippendorff_alpha_weighted(table, w[None])[0] == pytest.approx(
            krippendorff.alpha(value_counts=repeated, level_of_measurement="nominal"), abs=1e-9)


def test_a_patient_bootstrap_moves_a_patients_studies_together():
    patients = ["p1", "p1", "p2", "p3", "p3", "p3"]
    weights = patient_resample_weights(patients, 200, seed=1)
    assert weights.shape == (200, 6)
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 3] == weights[:, 5]).all()
    # three patients drawn per replicate, whatever their sizes
    assert (weights[:, [0, 2, 3]].sum(axis=1) == 3).all()


@pytest.mark.parametrize("seed", range(3))
def test_report_alpha_per_label_equals_the_package_on_the_readers_labels(seed):
    studies, votes = synthetic(seed)
    report = agreement_report(studies, votes, LABELS, n_bootstrap=50)
    sugg = {s["study_id"]: s["suggested"] for s in studies}
    for label in LABELS:
        data = np.full((8, len(studies)), np.nan)
        for j, s in enumerate(studies):
            for v in votes:
                if v["study_id"] == s["study_id"]:
                    data[int(v["reader_id"][1:]), j] = int(label in effective(v, sugg[s["study_id"]]))
        expected = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
        assert report["krippendorff_alpha"][label] == pytest.approx(expected, abs=1e-9)


def _with_patients(studies: list[dict], per_patient: int) -> list[dict]:
    return [{**s, "patient_id": f"P{i // per_patient}"} for i, s in enumerate(studies)]


def test_kappa_and_ai_intervals_bracket_the_point_and_resample_patients():
    studies, votes = synthetic(4, n=120)
    report = agreement_report(_with_patients(studies, 4), votes, LABELS, n_bootstrap=300)
    assert report["bootstrap"]["unit"] == "patient" and report["bootstrap"]["patients"] == 30
    for label in LABELS:
        low, high = report["fleiss_kappa_ci95"][label]
        assert low < report["fleiss_kappa"][label] < high
        low, high = report["krippendorff_alpha_ci95"][label]
        assert low < report["krippendorff_alpha"][label] < high
    ai = report["ai_vs_expert"]["overall"]
    for label in LABELS:
        low, high = ai["ci95"][label]["recall"]
        assert low <= ai["per_label"][label]["recall"] <= high


def test_clustered_patients_widen_the_kappa_interval():
    """A patient whose 4 studies were read alike is one piece of evidence, not four."""
    studies, votes = synthetic(5, n=40)
    copies = [{**s, "study_id": f"{s['study_id']}-{k}", "patient_id": s["study_id"]} for s in studies for k in range(4)]
    copied_votes = [{**v, "study_id": f"{v['study_id']}-{k}"} for v in votes for k in range(4)]
    as_patients = agreement_report(copies, copied_votes, LABELS, n_bootstrap=400)
    as_studies = agreement_report([{**s, "patient_id": s["study_id"]} for s in copies], copied_votes, LABELS,
                                  n_bootstrap=400)
    label = "atelectasis"
    width = lambda r: r["fleiss_kappa_ci95"][label][1] - r["fleiss_kappa_ci95"][label][0]  # noqa: E731
    assert width(as_patients) > 1.5 * width(as_studies)


def _preds(study_ids: list[str], rng: random.Random) -> Predictions:
    return Predictions(tuple(study_ids), tuple(LABELS), np.array([[rng.random() for _ in LABELS] for _ in study_ids]))


def test_holdout_scores_resample_patients_when_patients_are_known():
    rng = random.Random(0)
    truth = {f"S{i:03d}": frozenset(rng.sample(LABELS, rng.randint(1, 2))) for i in range(60)}
    preds = _preds(sorted(truth), rng)
    by_study = score_cxr(truth, preds, LABELS, n_bootstrap=200)
    one_each = score_cxr(truth, preds, LABELS, n_bootstrap=200, patients={s: s for s in truth})
    assert one_each["ci95"] == by_study["ci95"]  # one study per patient: the same resampling
    grouped = score_cxr(truth, preds, LABELS, n_bootstrap=200, patients={s: s[:3] for s in truth})
    assert grouped["bootstrap_unit"] == "patient" and grouped["per_label"] == by_study["per_label"]
    assert grouped["ci95"] != by_study["ci95"]


def test_lumbar_ordinal_alpha_equals_the_package_over_every_graded_cell():
    rng = random.Random(2)
    grades = list(Grade)
    reads, matrix = [], np.full((5, 6 * len(CELL_IDS)), np.nan)
    for i in range(6):
        for j, cell in enumerate(CELL_IDS):
            base = rng.choice(range(3))
            for r in rng.sample(range(5), rng.randint(2, 3)):
                g = min(2, max(0, base + rng.choice([-1, 0, 0, 1])))
                condition, level = cell_of(cell)
                reads.append(CellRead(f"s{i}", f"r{r}", condition, level, grades[g]))
                matrix[r, i * len(CELL_IDS) + j] = g
    result = ordinal_alpha(reads, {f"s{i}": f"p{i // 2}" for i in range(6)}, n_bootstrap=100)
    expected = krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal")
    assert result["overall"]["alpha"] == pytest.approx(expected, abs=1e-9)
    low, high = result["overall"]["ci95"]
    assert low <= result["overall"]["alpha"] <= high


def test_an_interval_of_no_defined_replicate_is_none():
    assert percentile_interval(np.array([np.nan, np.nan])) is None
    assert percentile_interval(np.array([1.0, 2.0, 3.0])) == (1.05, 2.95)


def test_ai_vs_expert_intervals_are_given_per_model_and_per_difficulty_tier_too():
    studies, votes = synthetic(6, n=90)
    ai = agreement_report(_with_patients(studies, 3), votes, LABELS, n_bootstrap=100)["ai_vs_expert"]
    for group in [*ai["by_model"], *ai["by_difficulty"].values()]:
        assert set(group["ci95"]) == set(LABELS)
        for label in LABELS:
            interval = group["ci95"][label]["precision"]
            assert interval is None or interval[0] <= group["per_label"][label]["precision"] <= interval[1]
