"""Reader assignment: K distinct readers per study, even load, capacity and exclusions."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from services.sampler.assignment import assign_readers, reoffer

PANEL = [f"R{i:02d}" for i in range(17)]
STUDIES = [f"S{i:04d}" for i in range(1000)]


def loads(assignment: dict[str, list[str]]) -> Counter:
    return Counter(r for readers in assignment.values() for r in readers)


def spread(counter: Counter, readers) -> int:
    values = [counter[r] for r in readers]
    return max(values) - min(values)


@pytest.mark.parametrize("seed", range(20))
def test_every_study_gets_k_distinct_readers_from_the_panel(seed):
    rng = random.Random(seed)
    panel = PANEL[: rng.randint(3, 17)]
    k = rng.randint(1, min(5, len(panel)))
    studies = STUDIES[: rng.randint(1, 400)]
    assignment = assign_readers(studies, panel, k, seed=seed)
    assert list(assignment) == studies
    for readers in assignment.values():
        assert len(readers) == len(set(readers)) == k
        assert set(readers) <= set(panel)


@pytest.mark.parametrize("seed", range(20))
def test_loads_differ_by_at_most_one(seed):
    rng = random.Random(seed)
    panel = PANEL[: rng.randint(3, 17)]
    studies = STUDIES[: rng.randint(1, 1000)]
    assignment = assign_readers(studies, panel, 3, seed=seed)
    assert spread(loads(assignment), panel) <= 1


@pytest.mark.parametrize("seed", range(20))
def test_exclusions_are_respected_and_loads_stay_even(seed):
    rng = random.Random(seed)
    exclusions = {r: set(rng.sample(STUDIES, 50)) for r in rng.sample(PANEL, 6)}
    assignment = assign_readers(STUDIES, PANEL, 3, seed=seed, exclusions=exclusions)
    for reader, barred in exclusions.items():
        assert not any(reader in assignment[s] for s in barred)
    assert spread(loads(assignment), PANEL) <= 1


@pytest.mark.parametrize("seed", range(20))
def test_capacity_is_respected_and_the_others_share_the_rest_evenly(seed):
    rng = random.Random(seed)
    capacity = {r: rng.randint(0, 150) for r in rng.sample(PANEL, 5)}
    assignment = assign_readers(STUDIES, PANEL, 3, seed=seed, capacity=capacity)
    load = loads(assignment)
    for reader, cap in capacity.items():
        assert load[reader] <= cap
    unbound = [r for r in PANEL if load[r] < capacity.get(r, 10**9)]
    assert spread(load, unbound) <= 1


def test_capacity_counts_existing_load():
    assignment = assign_readers(
        STUDIES[:30], ["A", "B", "C", "D"], 2, seed=0,
        capacity={"A": 12}, existing_load={"A": 10},
    )
    assert loads(assignment)["A"] <= 2


def test_existing_load_is_evened_out_before_anyone_gets_more():
    existing = {"A": 20, "B": 10, "C": 0, "D": 0}
    assignment = assign_readers(STUDIES[:40], list(existing), 2, seed=3, existing_load=existing)
    total = loads(assignment) + Counter(existing)
    assert spread(total, existing) <= 1


def test_same_inputs_and_seed_give_the_same_assignment_whatever_the_order():
    exclusions = {"R01": set(STUDIES[:10])}
    a = assign_readers(STUDIES, PANEL, 3, seed=9, exclusions=exclusions)
    b = assign_readers(STUDIES[::-1], PANEL[::-1], 3, seed=9, exclusions=exclusions)
    assert a == b
    assert a != assign_readers(STUDIES, PANEL, 3, seed=10, exclusions=exclusions)


def test_k_larger_than_the_panel_is_refused():
    with pytest.raises(ValueError, match="needs 4 readers but only 3 are eligible"):
        assign_readers(STUDIES[:5], ["A", "B", "C"], 4, seed=0)


def test_a_study_whose_eligible_readers_are_too_few_is_named():
    exclusions = {"A": {"S0003"}}
    with pytest.raises(ValueError, match="S0003"):
        assign_readers(STUDIES[:5], ["A", "B", "C"], 3, seed=0, exclusions=exclusions)


def test_too_little_total_capacity_is_refused():
    capacity = {r: 10 for r in PANEL}
    with pytest.raises(ValueError, match="capacity 170 is too small"):
        assign_readers(STUDIES[:100], PANEL, 3, seed=0, capacity=capacity)


@pytest.mark.parametrize("bad", [{"k": 0}, {"panel": ["A", "A", "B"]}, {"studies": ["S1", "S1"]}])
def test_malformed_requests_are_refused(bad):
    with pytest.raises(ValueError):
        assign_readers(bad.get("studies", ["S1"]), bad.get("panel", ["A", "B"]), bad.get("k", 1), seed=0)


# --- reoffer ------------------------------------------------------------------------------


def test_reoffer_goes_to_the_least_loaded_reader_who_has_not_seen_the_study():
    load = {"A": 5, "B": 1, "C": 0, "D": 2}
    assert reoffer("S1", ["B", "D"], "C", ["A", "B", "C", "D"], load) == "A"
    assert reoffer("S1", ["A"], "B", ["A", "B", "C", "D"], load) == "C"


def test_reoffer_respects_exclusions_and_breaks_ties_by_reader_id():
    load = {"A": 1, "B": 1, "C": 1, "D": 1}
    assert reoffer("S1", ["A"], "B", ["D", "C", "A", "B"], load) == "C"
    assert reoffer("S1", ["A"], "B", ["A", "B", "C", "D"], load, exclusions={"C": {"S1"}}) == "D"


def test_reoffer_returns_none_when_nobody_is_left():
    assert reoffer("S1", ["A", "B"], "C", ["A", "B", "C"], {}) is None
