"""The agreement report equals the reference implementations (statsmodels, scikit-learn)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from sklearn.metrics import precision_score, recall_score
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from services.common.protocols.cxr.reporting import agreement_report

LABELS = ["atelectasis", "cardiomegaly", "pleural_effusion", "pneumothorax"]
PROV = {"backend": "rules", "model": "", "prompt_version": "v1"}


def synthetic(seed: int, n: int = 60):
    """Studies with 3 readers each who add/remove labels at random, two model versions, three tiers."""
    rng = random.Random(seed)
    studies, votes = [], []
    for i in range(n):
        sid, suggested = f"S{i:03d}", sorted(rng.sample(LABELS, rng.randint(0, 2)))
        mapping = {**PROV, "backend": "lexicon", "prompt_version": rng.choice(["v1", "v2"])}
        studies.append({"study_id": sid, "suggested": suggested, "difficulty": rng.choice(["easy", "medium", "hard"]),
                        "extraction": PROV, "mapping": mapping, "accepted": rng.random() < 0.5, "labels": suggested})
        for r in rng.sample(range(8), 3):
            removed = [x for x in suggested if rng.random() < 0.2]
            added = [x for x in LABELS if x not in suggested and rng.random() < 0.1]
            verdict = "agree_all" if not (added or removed) else rng.choice(["agree_mostly", "disagree"])
            votes.append({"study_id": sid, "reader_id": f"R{r}", "verdict": verdict, "added_labels": added,
                          "removed_labels": removed, "seconds_spent": rng.uniform(5, 60)})
    return studies, votes


def effective(vote, suggested):
    return (set(suggested) - set(vote["removed_labels"])) | set(vote["added_labels"])


@pytest.mark.parametrize("seed", range(5))
def test_kappa_per_label_equals_statsmodels(seed):
    studies, votes = synthetic(seed)
    report = agreement_report(studies, votes, LABELS)
    sugg = {s["study_id"]: s["suggested"] for s in studies}
    for label in LABELS:
        ratings = np.array([[int(label in effective(v, sugg[s["study_id"]])) for v in votes
                             if v["study_id"] == s["study_id"]] for s in studies])
        table, _ = aggregate_raters(ratings, n_cat=2)
        expected = sm_fleiss_kappa(table, method="fleiss")
        assert report["fleiss_kappa"][label] == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_ai_vs_expert_equals_sklearn_against_the_readers_labelwise_majority(seed):
    studies, votes = synthetic(seed)
    table = agreement_report(studies, votes, LABELS)["ai_vs_expert"]["overall"]["per_label"]
    for label in LABELS:
        y_pred, y_true = [], []
        for s in studies:
            mine = [v for v in votes if v["study_id"] == s["study_id"]]
            y_pred.append(int(label in s["suggested"]))
            y_true.append(int(sum(label in effective(v, s["suggested"]) for v in mine) >= 2))
        assert table[label]["precision"] == pytest.approx(precision_score(y_true, y_pred, zero_division=0), abs=1e-9)
        assert table[label]["recall"] == pytest.approx(recall_score(y_true, y_pred, zero_division=0), abs=1e-9)
        confirmed = sum(t and p for t, p in zip(y_true, y_pred, strict=True))
        assert table[label]["confirmed"] == confirmed


def test_tables_split_by_model_version_and_by_difficulty_tier_cover_every_study():
    studies, votes = synthetic(7)
    ai = agreement_report(studies, votes, LABELS)["ai_vs_expert"]
    assert {g["mapping"]["prompt_version"] for g in ai["by_model"]} == {"v1", "v2"}
    assert sum(g["studies"] for g in ai["by_model"]) == len(studies)
    assert set(ai["by_difficulty"]) == {"easy", "medium", "hard"}
    assert sum(g["studies"] for g in ai["by_difficulty"].values()) == len(studies)


def test_verdict_shares_and_reader_stats_are_counted_from_the_votes():
    studies, votes = synthetic(3)
    report = agreement_report(studies, votes, LABELS)
    overall = report["verdict_shares"]["overall"]
    assert overall["agree_all"] == pytest.approx(sum(v["verdict"] == "agree_all" for v in votes) / len(votes))
    assert sum(overall.values()) == pytest.approx(1.0)
    r0 = [v for v in votes if v["reader_id"] == "R0"]
    assert report["readers"]["R0"]["reads"] == len(r0)
    median = float(np.median([v["seconds_spent"] for v in r0]))
    assert report["readers"]["R0"]["median_seconds"] == pytest.approx(median)


def test_the_report_names_no_study():
    studies, votes = synthetic(1)
    text = json.dumps(agreement_report(studies, votes, LABELS))
    assert not any(s["study_id"] in text for s in studies)


def test_a_label_nobody_ever_marked_has_no_kappa_rather_than_a_made_up_one():
    studies, votes = synthetic(2)
    report = agreement_report(studies, votes, [*LABELS, "fracture"])
    assert report["fleiss_kappa"]["fracture"] is None


@pytest.mark.parametrize("seed", range(3))
def test_presence_tables_counted_in_one_pass_equal_each_labels_own_table(seed):
    from services.common.protocols.cxr.reporting import presence_tables, reader_label_sets
    from services.common.protocols.kit.agreement import label_presence_table

    studies, votes = synthetic(seed)
    sets = reader_label_sets(studies, votes)
    tables = presence_tables(sets, [*LABELS, "fracture", LABELS[0]])  # a label no one marked; one twice
    assert set(tables) == {*LABELS, "fracture"}
    for label, table in tables.items():
        assert table.dtype == label_presence_table(sets, label).dtype
        assert np.array_equal(table, label_presence_table(sets, label))
