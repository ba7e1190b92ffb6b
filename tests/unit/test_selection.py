"""Benchmark selection and the patient-level, label-balanced released/holdout split."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from services.common.contracts import SelectionPlan
from services.common.protocols.kit.selection import NO_FINDING, AcceptedStudy, select_and_split

LABELS = [
    "atelectasis", "cardiomegaly", "consolidation", "pulmonary_edema", "pleural_effusion",
    "pneumothorax", "nodule_mass", "interstitial_fibrosis", "emphysema", "fracture",
    "mediastinal_hilar", "support_devices",
]
PREVALENCE = [0.25, 0.2, 0.15, 0.12, 0.25, 0.05, 0.08, 0.04, 0.06, 0.03, 0.03, 0.35]


def make_accepted(seed: int, n: int = 381, repeat_patient: float = 0.3) -> list[AcceptedStudy]:
    """Accepted studies; with probability `repeat_patient` a study belongs to the previous patient."""
    rng = random.Random(seed)
    studies, patient = [], 0
    for i in range(n):
        if rng.random() > repeat_patient:
            patient += 1
        labels = frozenset(x for x, p in zip(LABELS, PREVALENCE) if rng.random() < p)
        studies.append(AcceptedStudy(f"S{i:04d}", f"P{patient:04d}", labels))
    return studies


def prevalence(study_ids, by_id, label) -> float:
    return sum(label in (by_id[s].labels or {NO_FINDING}) for s in study_ids) / len(study_ids)


@pytest.mark.parametrize("seed", range(25))
def test_no_patient_is_on_both_sides(seed):
    accepted = make_accepted(seed, repeat_patient=0.5)
    split = select_and_split(accepted, SelectionPlan(seed=seed), LABELS)
    patient = {s.study_id: s.patient_id for s in accepted}
    released = {patient[s] for s in split.released}
    holdout = {patient[s] for s in split.holdout}
    assert released.isdisjoint(holdout)
    assert set(split.released).isdisjoint(split.holdout)


@pytest.mark.parametrize("seed", range(25))
def test_label_prevalence_differs_little_between_released_and_holdout(seed):
    accepted = make_accepted(seed)
    by_id = {s.study_id: s for s in accepted}
    split = select_and_split(accepted, SelectionPlan(seed=seed), LABELS)
    for label in [*LABELS, NO_FINDING]:
        gap = abs(prevalence(split.released, by_id, label) - prevalence(split.holdout, by_id, label))
        assert gap <= 0.03, (label, split.label_counts[label])


@pytest.mark.parametrize("seed", range(10))
def test_paper_scale_gives_two_hundred_split_into_two_hundreds(seed):
    split = select_and_split(make_accepted(seed, n=381), SelectionPlan(seed=seed), LABELS)
    assert len(split.released) == len(split.holdout) == 100
    assert split.released == sorted(split.released) and split.holdout == sorted(split.holdout)
    assert set(split.reasons) == set(split.released) | set(split.holdout)


def test_holdout_fraction_is_honoured():
    split = select_and_split(make_accepted(1), SelectionPlan(holdout_fraction=0.3, seed=1), LABELS)
    assert (len(split.released), len(split.holdout)) == (140, 60)


def test_same_inputs_and_seed_give_identical_output_whatever_the_input_order():
    accepted = make_accepted(7)
    shuffled = accepted[:]
    random.Random(0).shuffle(shuffled)
    plan = SelectionPlan(seed=5)
    assert select_and_split(accepted, plan, LABELS) == select_and_split(shuffled, plan, LABELS)


def test_the_seed_changes_the_split():
    accepted = make_accepted(7)
    holdouts = {tuple(select_and_split(accepted, SelectionPlan(seed=s), LABELS).holdout) for s in range(5)}
    assert len(holdouts) > 1


@pytest.mark.parametrize("seed", range(10))
def test_every_label_gets_its_minimum_when_possible(seed):
    accepted = make_accepted(seed)
    in_pool = Counter(x for s in accepted for x in s.labels)
    split = select_and_split(accepted, SelectionPlan(min_per_label=8, seed=seed), LABELS)
    chosen = {s.study_id: s for s in accepted if s.study_id in split.reasons}
    counts = Counter(x for s in chosen.values() for x in s.labels)
    for label in LABELS:
        assert counts[label] >= min(8, in_pool[label])
        if in_pool[label] < 8:
            assert f"{label}: wanted 8, accepted pool has {in_pool[label]}, got {in_pool[label]}" in split.unmet


def test_rare_and_multi_label_studies_come_before_single_common_ones():
    common = [AcceptedStudy(f"C{i:03d}", f"PC{i}", frozenset({"support_devices"})) for i in range(100)]
    rare = AcceptedStudy("R000", "PR", frozenset({"pneumothorax"}))
    multi = AcceptedStudy("M000", "PM", frozenset({"support_devices", "cardiomegaly"}))
    cardiomegaly = [AcceptedStudy(f"K{i:03d}", f"PK{i}", frozenset({"cardiomegaly"})) for i in range(10)]
    plan = SelectionPlan(target_size=10, min_per_label=0, seed=0)
    split = select_and_split([*common, rare, multi, *cardiomegaly], plan, LABELS)
    chosen = set(split.released) | set(split.holdout)
    assert {"R000", "M000"} <= chosen
    assert not any(s.startswith("C") for s in chosen)


def test_no_finding_studies_only_fill():
    abnormal = make_accepted(3, n=300)
    abnormal = [s for s in abnormal if s.labels]
    normals = [AcceptedStudy(f"N{i:03d}", f"PN{i}", frozenset()) for i in range(100)]
    full = select_and_split(abnormal + normals, SelectionPlan(seed=0), LABELS)
    assert not any(s.startswith("N") for s in full.released + full.holdout)

    few = abnormal[:150]
    filled = select_and_split(few + normals, SelectionPlan(seed=0), LABELS)
    chosen = filled.released + filled.holdout
    assert sum(s.startswith("N") for s in chosen) == 50
    assert all(filled.reasons[s].startswith("no finding") for s in chosen if s.startswith("N"))


def test_fewer_accepted_than_the_target_are_all_used_and_reported():
    accepted = make_accepted(2, n=60)
    split = select_and_split(accepted, SelectionPlan(seed=0), LABELS)
    assert len(split.released) + len(split.holdout) == 60
    assert "benchmark: wanted 200, 60 accepted" in split.unmet


def test_a_study_accepted_twice_is_refused():
    accepted = make_accepted(2, n=10)
    with pytest.raises(ValueError, match="twice"):
        select_and_split(accepted + accepted[:1], SelectionPlan(), LABELS)


def test_label_counts_add_up_to_the_split():
    accepted = make_accepted(4)
    by_id = {s.study_id: s for s in accepted}
    split = select_and_split(accepted, SelectionPlan(seed=4), LABELS)
    for label, (released, holdout) in split.label_counts.items():
        assert released == sum(label in (by_id[s].labels or {NO_FINDING}) for s in split.released)
        assert holdout == sum(label in (by_id[s].labels or {NO_FINDING}) for s in split.holdout)


def test_a_benchmark_of_one_patient_is_split_as_far_as_whole_patients_allow():
    """All chosen studies from one patient: one side stays empty and says so (it used to crash the
    swap refinement, leaving the release forever 'requested')."""
    same_patient = [AcceptedStudy("a", "p1", frozenset()), AcceptedStudy("b", "p1", frozenset({"cardiomegaly"}))]
    split = select_and_split(same_patient, SelectionPlan(target_size=2, min_per_label=0), LABELS)
    assert sorted(split.released + split.holdout) == ["a", "b"]
    assert not (split.released and split.holdout)
    assert any("whole patients only" in u for u in split.unmet)
