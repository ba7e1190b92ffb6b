"""The simulated radiologist's judgement, and each reader-model parameter moving outcomes in the
direction its documentation states."""

from __future__ import annotations

import dataclasses
import random
import statistics

import pytest

from radcurate.simulate import DEFAULT_MODEL, ReaderModel, SimReader, Truth, ability_for, make_reader, miss_rate_for

LABELS = ["atelectasis", "cardiomegaly", "pleural_effusion", "pneumothorax"]
PERFECT = ReaderModel(sensitivity=1, subtle_sensitivity=1, false_positive_rate=0, automation_bias=0,
                      automation_bias_subtle=0, unsuggested_factor=1, reader_sd=0, label_sd=0)


def reader(model: ReaderModel = PERFECT, seed: int = 0, ability: float = 0.0, user: str = "r") -> SimReader:
    return SimReader(user, "t", 0.05, random.Random(seed), model, ability, panel_seed=seed)


def truth(labels=(), subtle=(), study="s") -> Truth:
    return Truth(frozenset(labels), frozenset(subtle), study)


def test_a_perfect_reader_agrees_with_a_correct_suggestion():
    vote = reader().judge({"cardiomegaly"}, truth({"cardiomegaly"}), LABELS)
    assert vote["verdict"] == "agree_all" and vote["added_labels"] == vote["removed_labels"] == []


def test_one_wrong_label_is_agree_mostly_with_the_correction():
    vote = reader().judge({"cardiomegaly", "pneumothorax"}, truth({"cardiomegaly"}), LABELS)
    assert (vote["verdict"], vote["removed_labels"]) == ("agree_mostly", ["pneumothorax"])


def test_two_or_more_wrong_labels_is_disagree():
    vote = reader().judge(set(), truth({"cardiomegaly", "atelectasis"}), LABELS)
    assert (vote["verdict"], vote["added_labels"]) == ("disagree", ["atelectasis", "cardiomegaly"])


def test_a_probability_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="automation_bias"):
        ReaderModel(automation_bias=1.5)


# --- each parameter, in its documented direction --------------------------------------------


def detection_rate(model: ReaderModel, t: Truth, label: str, suggested=(), n: int = 3000, seed: int = 0) -> float:
    """Share of reads (each on a different study, so shared errors average out) that keep `label`."""
    r = reader(model, seed)
    hits = sum(label in r.perceive(dataclasses.replace(t, study_id=f"s{i}"), LABELS, suggested) for i in range(n))
    return hits / n


@pytest.mark.parametrize("subtle", [False, True])
def test_higher_sensitivity_finds_more_true_findings(subtle):
    field = "subtle_sensitivity" if subtle else "sensitivity"
    t = truth({"pneumothorax"}, {"pneumothorax"} if subtle else ())
    low = detection_rate(dataclasses.replace(DEFAULT_MODEL, **{field: 0.5}), t, "pneumothorax")
    high = detection_rate(dataclasses.replace(DEFAULT_MODEL, **{field: 0.9}), t, "pneumothorax")
    assert high > low + 0.25


def test_subtle_findings_are_missed_more_often_by_default():
    clear = detection_rate(DEFAULT_MODEL, truth({"pneumothorax"}), "pneumothorax")
    subtle = detection_rate(DEFAULT_MODEL, truth({"pneumothorax"}, {"pneumothorax"}), "pneumothorax")
    assert 1 - subtle > 2 * (1 - clear) > 0


def test_a_higher_false_positive_rate_imagines_more_absent_findings():
    low = detection_rate(dataclasses.replace(DEFAULT_MODEL, false_positive_rate=0.01), truth(), "cardiomegaly")
    high = detection_rate(dataclasses.replace(DEFAULT_MODEL, false_positive_rate=0.10), truth(), "cardiomegaly")
    assert high > low + 0.05


def test_automation_bias_keeps_wrong_suggestions_more_often_and_most_when_subtle():
    no_bias = dataclasses.replace(DEFAULT_MODEL, automation_bias=0.0, automation_bias_subtle=0.0)
    kept = lambda model, label: detection_rate(model, truth(), label, suggested={label})  # noqa: E731
    assert kept(DEFAULT_MODEL, "cardiomegaly") > kept(no_bias, "cardiomegaly") + 0.2
    # atelectasis is hard to exclude, cardiomegaly is not: a wrong atelectasis suggestion sticks more
    assert kept(DEFAULT_MODEL, "atelectasis") > kept(DEFAULT_MODEL, "cardiomegaly") + 0.15


def test_findings_the_ai_did_not_suggest_are_found_less_when_the_factor_is_lower():
    t = truth({"pleural_effusion"})
    searched = detection_rate(dataclasses.replace(DEFAULT_MODEL, unsuggested_factor=1.0), t, "pleural_effusion")
    anchored = detection_rate(dataclasses.replace(DEFAULT_MODEL, unsuggested_factor=0.6), t, "pleural_effusion")
    assert searched > anchored + 0.2


def all_three_miss(model: ReaderModel, n: int = 3000) -> tuple[float, float]:
    """(P(one reader misses), P(all three readers of a study miss)) for a subtle finding."""
    readers = [reader(model, seed=k, user=f"r{k}") for k in range(3)]
    for r in readers:
        r.panel_seed = 7  # one panel: its readers share each study's hard image
    single = every = 0
    for i in range(n):
        t = truth({"pneumothorax"}, {"pneumothorax"}, f"s{i}")
        misses = ["pneumothorax" not in r.perceive(t, LABELS, {"pneumothorax"}) for r in readers]
        single += misses[0]
        every += all(misses)
    return single / n, every / n


def test_correlated_errors_make_all_readers_miss_together_at_the_same_marginal_rate():
    independent = dataclasses.replace(DEFAULT_MODEL, hard_correlation=0.0, automation_bias_subtle=0.0, label_sd=0)
    correlated = dataclasses.replace(independent, hard_correlation=0.8)
    one_i, all_i = all_three_miss(independent)
    one_c, all_c = all_three_miss(correlated)
    assert abs(one_i - one_c) < 0.05  # the copula keeps each reader's own miss rate
    assert all_c > 3 * all_i


def test_reader_spread_widens_the_differences_between_readers():
    def spread(model: ReaderModel) -> float:
        rng = random.Random(1)
        readers = [make_reader(f"r{k}", "t", rng, model) for k in range(40)]
        return statistics.pstdev(r.sensitivity("cardiomegaly", False) for r in readers)

    assert spread(dataclasses.replace(DEFAULT_MODEL, reader_sd=1.0)) > 2 * spread(
        dataclasses.replace(DEFAULT_MODEL, reader_sd=0.2))


def test_label_spread_makes_one_reader_better_at_some_labels_than_others():
    def spread(model: ReaderModel) -> float:
        r = reader(model)
        return statistics.pstdev(r.sensitivity(f"label{k}", False) for k in range(40))

    assert spread(DEFAULT_MODEL) > 0 == spread(dataclasses.replace(DEFAULT_MODEL, label_sd=0.0))


def mean_seconds(model: ReaderModel, t: Truth, n: int = 2000) -> float:
    r = reader(model)
    return statistics.fmean(r.seconds(t, t.labels) for _ in range(n))


def test_reads_take_longer_with_more_findings_and_with_subtle_ones():
    one, three = truth({"cardiomegaly"}), truth({"cardiomegaly", "atelectasis", "pleural_effusion"})
    assert mean_seconds(DEFAULT_MODEL, three) > 1.3 * mean_seconds(DEFAULT_MODEL, one)
    flat = dataclasses.replace(DEFAULT_MODEL, seconds_per_label=0.0)
    assert mean_seconds(flat, three) == pytest.approx(mean_seconds(flat, one), rel=1e-9)
    subtle = truth({"cardiomegaly"}, {"cardiomegaly"})
    assert mean_seconds(DEFAULT_MODEL, subtle) > 1.3 * mean_seconds(DEFAULT_MODEL, one)


def test_a_saved_readers_skill_is_rebuilt_from_their_lumbar_slip_rate():
    for ability in (-1.0, 0.0, 0.7):
        assert ability_for(miss_rate_for(ability)) == pytest.approx(ability)
