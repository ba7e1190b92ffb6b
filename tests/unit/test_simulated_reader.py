"""The simulated radiologist's judgement."""

from __future__ import annotations

import random

from radcurate.simulate import SimReader, Truth

LABELS = ["atelectasis", "cardiomegaly", "pleural_effusion", "pneumothorax"]


def reader(miss_rate: float, seed: int = 0) -> SimReader:
    return SimReader("r", "t", miss_rate, random.Random(seed))


def test_a_perfect_reader_agrees_with_a_correct_suggestion(monkeypatch):
    monkeypatch.setattr("radcurate.simulate.FALSE_POSITIVE_RATE", 0.0)
    vote = reader(0.0).judge({"cardiomegaly"}, Truth(frozenset({"cardiomegaly"}), frozenset()), LABELS)
    assert vote["verdict"] == "agree_all" and vote["added_labels"] == vote["removed_labels"] == []


def test_one_wrong_label_is_agree_mostly_with_the_correction(monkeypatch):
    monkeypatch.setattr("radcurate.simulate.FALSE_POSITIVE_RATE", 0.0)
    vote = reader(0.0).judge({"cardiomegaly", "pneumothorax"}, Truth(frozenset({"cardiomegaly"}), frozenset()), LABELS)
    assert (vote["verdict"], vote["removed_labels"]) == ("agree_mostly", ["pneumothorax"])


def test_two_or_more_wrong_labels_is_disagree(monkeypatch):
    monkeypatch.setattr("radcurate.simulate.FALSE_POSITIVE_RATE", 0.0)
    vote = reader(0.0).judge(set(), Truth(frozenset({"cardiomegaly", "atelectasis"}), frozenset()), LABELS)
    assert (vote["verdict"], vote["added_labels"]) == ("disagree", ["atelectasis", "cardiomegaly"])


def test_subtle_findings_are_missed_more_often():
    truth_clear = Truth(frozenset({"pneumothorax"}), frozenset())
    truth_subtle = Truth(frozenset({"pneumothorax"}), frozenset({"pneumothorax"}))
    r = reader(0.1, seed=1)
    clear = sum("pneumothorax" not in r.perceive(truth_clear, LABELS) for _ in range(4000))
    subtle = sum("pneumothorax" not in r.perceive(truth_subtle, LABELS) for _ in range(4000))
    assert subtle > 2 * clear > 0
