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
        labels = frozenset(x for x, p in zip(LABELS, PREVALENCE, strict=True) if rng.random() < p)
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
        # the plan's 20 normals come in whole patients: one two-study patient is a 0.04 gap
        assert gap <= (0.04 if label == NO_FINDING else 0.03), (label, split.label_counts[label])


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


# The composition of the REVEAL-CXR selection before plans set it: priority only, no caps.
PRIORITY_ONLY = {"normal_share": None, "single_label_share": None, "max_label_share": 1.0, "max_pair_share": 1.0}


def test_rare_and_multi_label_studies_come_before_single_common_ones():
    common = [AcceptedStudy(f"C{i:03d}", f"PC{i}", frozenset({"support_devices"})) for i in range(100)]
    rare = AcceptedStudy("R000", "PR", frozenset({"pneumothorax"}))
    multi = AcceptedStudy("M000", "PM", frozenset({"support_devices", "cardiomegaly"}))
    cardiomegaly = [AcceptedStudy(f"K{i:03d}", f"PK{i}", frozenset({"cardiomegaly"})) for i in range(10)]
    plan = SelectionPlan(target_size=10, min_per_label=0, seed=0, **PRIORITY_ONLY)
    split = select_and_split([*common, rare, multi, *cardiomegaly], plan, LABELS)
    chosen = set(split.released) | set(split.holdout)
    assert {"R000", "M000"} <= chosen
    assert not any(s.startswith("C") for s in chosen)


def test_without_a_normal_share_no_finding_studies_only_fill():
    abnormal = make_accepted(3, n=300)
    abnormal = [s for s in abnormal if s.labels]
    normals = [AcceptedStudy(f"N{i:03d}", f"PN{i}", frozenset()) for i in range(100)]
    full = select_and_split(abnormal + normals, SelectionPlan(seed=0, **PRIORITY_ONLY), LABELS)
    assert not any(s.startswith("N") for s in full.released + full.holdout)

    few = abnormal[:150]
    filled = select_and_split(few + normals, SelectionPlan(seed=0, **PRIORITY_ONLY), LABELS)
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


# --- the composition a curator plans --------------------------------------------------------


def heart_failure_pool(seed: int, n: int = 600) -> list[AcceptedStudy]:
    """A pool like the CXR archive's accepted studies: the heart-failure triad co-occurs a lot,
    plenty of single-label and normal studies."""
    rng = random.Random(seed)
    studies = []
    for i in range(n):
        labels = set()
        if rng.random() < 0.3:
            labels |= {x for x in ("cardiomegaly", "pulmonary_edema", "pleural_effusion") if rng.random() < 0.8}
        labels |= {x for x, p in zip(LABELS, PREVALENCE, strict=True) if rng.random() < p / 3}
        studies.append(AcceptedStudy(f"S{i:04d}", f"P{i // 2:04d}", frozenset(labels)))
    return studies


def chosen_of(split, pool):
    ids = set(split.released) | set(split.holdout)
    return [s for s in pool if s.study_id in ids]


@pytest.mark.parametrize("seed", range(5))
def test_the_default_plan_has_normals_singles_and_caps_cooccurrence(seed):
    from services.common.protocols.kit.selection import composition

    pool = make_accepted(seed)
    split = select_and_split(pool, SelectionPlan(seed=seed), LABELS)
    comp = composition(chosen_of(split, pool), LABELS)
    assert comp["groups"] == {"normal": 20, "single_label": 50, "multi_label": 130}
    assert comp["max_pair"][0] <= 30  # 15 % of 200
    assert max(comp["per_label"].values()) <= 70  # 35 % of 200
    assert split.unmet == []


@pytest.mark.parametrize("seed", range(3))
def test_when_cooccurrence_caps_starve_the_multi_label_quota_the_caps_hold_and_the_gap_is_named(seed):
    from services.common.protocols.kit.selection import composition

    pool = heart_failure_pool(seed)
    split = select_and_split(pool, SelectionPlan(seed=seed), LABELS)
    comp = composition(chosen_of(split, pool), LABELS)
    assert comp["studies"] == 200 and comp["groups"]["normal"] == 20
    assert comp["max_pair"][0] <= 30 and comp["groups"]["multi_label"] < 130
    assert f"multi_label: wanted 130, got {comp['groups']['multi_label']}" in split.unmet
    assert f"single_label: wanted 50, got {comp['groups']['single_label']}" in split.unmet


def test_label_bounds_override_the_minimum_and_the_maximum():
    from services.common.contracts import LabelBounds

    pool = heart_failure_pool(1)
    plan = SelectionPlan(seed=1, label_bounds={"pleural_effusion": LabelBounds(max=25),
                                               "pneumothorax": LabelBounds(min=12)})
    counts = Counter(x for s in chosen_of(select_and_split(pool, plan, LABELS), pool) for x in s.labels)
    assert counts["pleural_effusion"] <= 25
    assert counts["pneumothorax"] >= min(12, sum("pneumothorax" in s.labels for s in pool))


def test_a_plan_the_pool_cannot_meet_names_its_shortfall():
    abnormal = [s for s in heart_failure_pool(2) if s.labels][:220]
    normals = [AcceptedStudy(f"N{i:03d}", f"PN{i}", frozenset()) for i in range(5)]
    split = select_and_split(abnormal + normals, SelectionPlan(seed=0, normal_share=0.2), LABELS)
    assert len(split.released) + len(split.holdout) == 200
    assert "normal: wanted 40, got 5" in split.unmet
    assert any(u.startswith("composition: quotas could not be filled as planned") for u in split.unmet)


def test_caps_give_way_only_when_the_pool_leaves_no_other_choice_and_say_so():
    triad = [AcceptedStudy(f"T{i:03d}", f"PT{i}", frozenset({"cardiomegaly", "pleural_effusion"}))
             for i in range(30)]
    split = select_and_split(triad, SelectionPlan(target_size=20, min_per_label=0, seed=0), LABELS)
    assert len(split.released) + len(split.holdout) == 20
    assert "cardiomegaly + pleural_effusion: at most 3 studies with both wanted, got 20" in split.unmet


def test_an_unknown_label_in_the_bounds_is_named_not_silently_dropped():
    from services.common.contracts import LabelBounds

    split = select_and_split(make_accepted(0), SelectionPlan(label_bounds={"pneumonia": LabelBounds(min=3)}), LABELS)
    assert "label_bounds: pneumonia is not a label of this protocol, ignored" in split.unmet


def test_an_old_plan_without_composition_fields_still_parses_with_the_defaults():
    plan = SelectionPlan.model_validate({"target_size": 100, "holdout_fraction": 0.5, "min_per_label": 5, "seed": 3})
    assert plan.normal_share == 0.10 and plan.label_bounds == {}
    with pytest.raises(ValueError, match="must not exceed 1"):
        SelectionPlan(normal_share=0.6, single_label_share=0.5)


def test_the_composition_counts_groups_histogram_and_cooccurrence():
    from services.common.protocols.kit.selection import composition

    studies = [AcceptedStudy("a", "p", frozenset()), AcceptedStudy("b", "p", frozenset({"fracture"})),
               AcceptedStudy("c", "q", frozenset({"fracture", "emphysema"}))]
    comp = composition(studies, LABELS)
    assert comp["groups"] == {"normal": 1, "single_label": 1, "multi_label": 1}
    assert comp["labels_per_study"] == {"0": 1, "1": 1, "2": 1}
    assert comp["co_occurrence"]["fracture"]["emphysema"] == 1 and comp["per_label"]["fracture"] == 2
