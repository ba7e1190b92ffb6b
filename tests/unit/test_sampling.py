"""The review sampler: quotas, difficulty spread, reproducibility, speed."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from services.common.contracts import SamplingPlan
from services.common.protocols.kit.sampling import (
    NO_FINDING,
    Candidate,
    DifficultyTier,
    difficulty_score,
    difficulty_tier,
    draw_sample,
)

LABELS = [
    "atelectasis", "cardiomegaly", "consolidation", "pulmonary_edema", "pleural_effusion",
    "pneumothorax", "nodule_mass", "interstitial_fibrosis", "emphysema", "fracture",
    "mediastinal_hilar", "support_devices",
]
PREVALENCE = [0.15, 0.12, 0.08, 0.07, 0.14, 0.02, 0.04, 0.015, 0.03, 0.005, 0.01, 0.25]


def make_pool(size: int, seed: int = 0, prevalence: list[float] = PREVALENCE) -> list[Candidate]:
    """A pool shaped like a chest radiograph archive: a few common labels, a long rare tail."""
    rng = np.random.default_rng(seed)
    has = rng.random((size, len(LABELS))) < np.array(prevalence)
    hedged = has & (rng.random((size, len(LABELS))) < 0.1)
    confidence = rng.uniform(0.5, 1.0, size).tolist()
    unmapped = rng.poisson(0.3, size).tolist()
    disagree = (rng.random(size) < 0.08).tolist()
    names = np.array(LABELS)
    return [
        Candidate(
            study_id=f"S{i:06d}",
            patient_id=f"P{i // 2:06d}",
            labels=frozenset(names[has[i]].tolist()),
            uncertain=frozenset(names[hedged[i]].tolist()),
            confidence=confidence[i] if has[i].any() else None,
            n_unmapped=unmapped[i],
            backends_disagree=disagree[i],
        )
        for i in range(size)
    ]


def ids(result) -> list[str]:
    return [s.study_id for s in result.selected]


def sampled_label_counts(result, pool) -> Counter:
    by_id = {c.study_id: c for c in pool}
    return Counter(label for s in result.selected for label in by_id[s.study_id].labels)


POOL = make_pool(20_000, seed=1)


# --- reproducibility ----------------------------------------------------------------------


def test_same_pool_plan_and_seed_give_the_same_sample_whatever_the_pool_order():
    plan = SamplingPlan(n=500, seed=11)
    shuffled = POOL[:]
    random.Random(3).shuffle(shuffled)
    assert draw_sample(POOL, plan, LABELS) == draw_sample(shuffled, plan, LABELS)


def test_different_seeds_give_different_samples():
    a = draw_sample(POOL, SamplingPlan(n=500, seed=1), LABELS)
    b = draw_sample(POOL, SamplingPlan(n=500, seed=2), LABELS)
    assert ids(a) != ids(b)


# --- quotas -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(15))
def test_sample_has_n_distinct_studies_from_the_pool(seed):
    pool = make_pool(3000, seed=seed)
    result = draw_sample(pool, SamplingPlan(n=400, min_per_label=10, seed=seed), LABELS)
    assert len(ids(result)) == len(set(ids(result))) == 400
    assert set(ids(result)) <= {c.study_id for c in pool}
    assert ids(result) == sorted(ids(result))


@pytest.mark.parametrize("seed", range(15))
def test_every_label_gets_its_minimum_when_the_pool_allows(seed):
    pool = make_pool(5000, seed=seed)
    in_pool = Counter(label for c in pool for label in c.labels)
    result = draw_sample(pool, SamplingPlan(n=600, min_per_label=20, seed=seed), LABELS)
    counts = sampled_label_counts(result, pool)
    for label in LABELS:
        assert counts[label] >= min(20, in_pool[label]), label


def test_a_label_the_pool_cannot_fill_is_taken_whole_and_reported():
    prevalence = PREVALENCE[:9] + [0.0] + PREVALENCE[10:]
    pool = make_pool(5000, seed=4, prevalence=prevalence)
    pool += [Candidate(f"F{i}", f"PF{i}", frozenset({"fracture"})) for i in range(7)]
    result = draw_sample(pool, SamplingPlan(n=600, min_per_label=25, seed=0), LABELS)
    assert sampled_label_counts(result, pool)["fracture"] == 7
    assert any(u.startswith("fracture: wanted 25, pool has 7") for u in result.unmet_quotas)


def test_rarest_labels_are_filled_first_and_say_so():
    result = draw_sample(POOL, SamplingPlan(n=500, min_per_label=25, seed=0), LABELS)
    quotas = [s.quota for s in result.selected]
    assert "min_per_label:fracture" in quotas
    fracture = [s for s in result.selected if s.quota == "min_per_label:fracture"]
    assert all("fracture" in s.reason for s in fracture)


@pytest.mark.parametrize("seed", range(15))
def test_no_label_exceeds_max_share_when_avoidable(seed):
    pool = make_pool(5000, seed=seed)
    plan = SamplingPlan(n=500, max_label_share=0.2, seed=seed)
    result = draw_sample(pool, plan, LABELS)
    assert max(sampled_label_counts(result, pool).values()) <= 0.2 * 500
    assert not any("max_label_share" in u for u in result.unmet_quotas)


def test_share_cap_is_broken_only_to_fill_the_sample_and_is_reported():
    pool = [Candidate(f"S{i:03d}", f"P{i}", frozenset({"support_devices"})) for i in range(100)]
    result = draw_sample(pool, SamplingPlan(n=50, min_per_label=0, no_finding_share=0, seed=0), LABELS)
    assert len(result.selected) == 50
    assert any("max_label_share" in u for u in result.unmet_quotas)


@pytest.mark.parametrize("seed", range(10))
def test_no_finding_share_is_met(seed):
    pool = make_pool(5000, seed=seed)
    result = draw_sample(pool, SamplingPlan(n=500, no_finding_share=0.1, seed=seed), LABELS)
    normals = [s for s in result.selected if s.stratum == NO_FINDING]
    assert len(normals) == 50
    assert {s.quota for s in normals} == {"no_finding_share"}


def test_missing_normals_are_reported():
    pool = [c for c in POOL if c.labels][:3000]
    result = draw_sample(pool, SamplingPlan(n=300, no_finding_share=0.1, seed=0), LABELS)
    assert f"{NO_FINDING}: wanted 30, got 0" in result.unmet_quotas
    assert len(result.selected) == 300


def test_a_pool_smaller_than_n_is_taken_whole_and_reported():
    pool = make_pool(80, seed=2)
    result = draw_sample(pool, SamplingPlan(n=100, seed=0), LABELS)
    assert sorted(ids(result)) == sorted(c.study_id for c in pool)
    assert "sample: wanted 100, pool has 80" in result.unmet_quotas


def test_a_study_listed_twice_is_refused():
    with pytest.raises(ValueError, match="twice"):
        draw_sample(POOL[:10] + POOL[:1], SamplingPlan(n=5), LABELS)


# --- difficulty ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(10))
def test_difficulty_tiers_are_roughly_equal_thirds_where_available(seed):
    pool = make_pool(10_000, seed=seed)
    result = draw_sample(pool, SamplingPlan(n=900, seed=seed), LABELS)
    assert sum(result.tier_counts.values()) == 900
    for tier, count in result.tier_counts.items():
        assert abs(count - 300) <= 15, (tier, result.tier_counts)
    assert Counter(s.difficulty for s in result.selected) == result.tier_counts


def test_a_plain_normal_study_scores_zero_and_is_easy():
    normal = Candidate("S1", "P1", frozenset())
    assert difficulty_score(normal, {}, 1000) == 0.0
    assert difficulty_tier(0.0) is DifficultyTier.EASY


def test_each_hesitation_signal_raises_the_score():
    freq = {"cardiomegaly": 300, "fracture": 3}
    base = Candidate("S1", "P1", frozenset({"cardiomegaly"}), confidence=0.95)
    harder = [
        Candidate("S1", "P1", frozenset({"cardiomegaly", "fracture"}), confidence=0.95),
        Candidate("S1", "P1", frozenset({"fracture"}), confidence=0.95),
        Candidate("S1", "P1", base.labels, frozenset({"cardiomegaly"}), confidence=0.95),
        Candidate("S1", "P1", base.labels, confidence=0.95, n_unmapped=1),
        Candidate("S1", "P1", base.labels, confidence=0.6),
        Candidate("S1", "P1", base.labels, confidence=0.95, backends_disagree=True),
    ]
    easy = difficulty_score(base, freq, 1000)
    for c in harder:
        assert difficulty_score(c, freq, 1000) > easy, c


def test_score_stays_between_zero_and_one_and_tiers_are_ordered():
    worst = Candidate(
        "S1", "P1", frozenset(LABELS), frozenset(LABELS), confidence=0.0, n_unmapped=9,
        backends_disagree=True,
    )
    assert difficulty_score(worst, {}, 1000) == pytest.approx(1.0)
    assert difficulty_tier(1.0) is DifficultyTier.HARD
    scores = np.linspace(0, 1, 101)
    ranks = [list(DifficultyTier).index(difficulty_tier(s)) for s in scores]
    assert ranks == sorted(ranks)


def test_sampling_from_a_large_pool_fills_the_whole_sample():
    # Speed is measured by bench/bench_sampling.py (make bench), not asserted here.
    pool = make_pool(20_000, seed=0)
    result = draw_sample(pool, SamplingPlan(n=1000, seed=0), LABELS)
    assert len(result.selected) == 1000
    assert len({s.study_id for s in result.selected}) == 1000
