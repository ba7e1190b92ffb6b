"""Pick the studies worth an expert's time: every label covered, normals included, difficulty spread.

Pure logic: the sampler service feeds it the candidate pool and records what comes back. The same
pool, plan and seed always give the same sample, whatever order the pool arrives in, because the
pool is sorted by `study_id` before one seeded permutation decides every tie.

Order of the quotas (each later step only fills what the earlier ones left):
1. `min_per_label` studies for every label, rarest label first, so rare labels are never crowded
   out by the common ones they co-occur with;
2. `no_finding_share` of studies with no label at all;
3. the rest from abnormal studies, always from the least-represented difficulty tier that still
   has candidates, which gives roughly equal thirds where the pool allows.
Throughout, no label may exceed `max_label_share` of the sample; that cap is only broken (and
reported in `unmet_quotas`) when the pool cannot fill the sample any other way.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from operator import attrgetter

import numpy as np

from services.common.contracts import SamplingPlan

NO_FINDING = "no_finding"

# Weights of the hesitation signals in `difficulty_score`; they sum to 1 so the score is in [0, 1].
W_LABELS, W_RARITY, W_UNCERTAIN, W_UNMAPPED, W_LOW_CONFIDENCE, W_DISAGREE = (
    0.20, 0.20, 0.15, 0.15, 0.15, 0.15,
)
# Tier boundaries on the score: a single common, confidently mapped label is EASY; a second label,
# a hedged mention or an unmapped finding on top of it makes it MEDIUM; two such signals, HARD.
EASY_BELOW = 0.15
HARD_FROM = 0.30


class DifficultyTier(StrEnum):
    EASY = "easy"
    MEDIUM = "medium"
    HARD = "hard"


_TIER_RANK = {DifficultyTier.EASY: 0, DifficultyTier.MEDIUM: 1, DifficultyTier.HARD: 2}


@dataclass(frozen=True)
class Candidate:
    """A study in the pool with what the mapper suggested for it."""

    study_id: str
    patient_id: str
    labels: frozenset[str]
    uncertain: frozenset[str] = frozenset()  # labels suggested from hedged mentions
    confidence: float | None = None  # lowest mapping confidence among the labels
    n_unmapped: int = 0  # findings the mapper could not place in the taxonomy
    backends_disagree: bool = False


@dataclass(frozen=True)
class Selection:
    """One sampled study and why it was chosen (recorded with the sampling run)."""

    study_id: str
    patient_id: str
    stratum: str  # the study's rarest label, or "no_finding"
    quota: str  # the quota that brought it in, e.g. "min_per_label:fracture"
    difficulty: DifficultyTier
    reason: str


@dataclass
class SampleResult:
    selected: list[Selection]  # sorted by study_id
    unmet_quotas: list[str]  # human-readable, e.g. "fracture: wanted 25, pool has 7"
    tier_counts: dict[DifficultyTier, int]
    label_counts: dict[str, int] = field(default_factory=dict)  # per label in the sample


def difficulty_score(c: Candidate, label_freq: Mapping[str, int], n_pool: int) -> float:
    """How likely a reader is to hesitate over this study, from 0 (plain normal) to 1.

    Each signal is a reason the suggested labels may be wrong or hard to verify: many labels,
    rare labels, hedged mentions, findings outside the taxonomy, low mapping confidence, and
    extraction backends that disagree. Counts saturate so one noisy signal cannot dominate.
    """
    rarest = min((label_freq.get(label, 0) for label in c.labels), default=math.inf)
    return float(_scores([c], np.array([rarest], dtype=float), n_pool)[0])


def _scores(pool: Sequence[Candidate], rarest_freq: np.ndarray, n_pool: int) -> np.ndarray:
    """`difficulty_score` for a whole pool at once; `rarest_freq` is inf where a study has no label.

    Vectorised because the pool is scored on every sampling run (100,000 studies at scale).
    """
    n_pool = max(n_pool, 2)
    columns = np.array(
        [(len(c.labels), len(c.uncertain), c.n_unmapped, c.backends_disagree,
          1.0 if c.confidence is None else c.confidence) for c in pool],
        dtype=float,
    ).reshape(-1, 5)
    n_labels, n_uncertain, n_unmapped, disagree, confidence = columns.T
    freq = np.clip(np.where(np.isinf(rarest_freq), n_pool, rarest_freq), 1, n_pool)
    rarity = np.log(n_pool / freq) / math.log(n_pool)  # 0: every study has it, 1: seen once
    return (
        W_LABELS * np.minimum(n_labels, 4) / 4
        + W_RARITY * rarity
        + W_UNCERTAIN * np.minimum(n_uncertain, 2) / 2
        + W_UNMAPPED * np.minimum(n_unmapped, 2) / 2
        + W_LOW_CONFIDENCE * np.clip(1.0 - confidence, 0.0, 1.0)
        + W_DISAGREE * disagree
    )


def difficulty_tier(score: float) -> DifficultyTier:
    if score < EASY_BELOW:
        return DifficultyTier.EASY
    return DifficultyTier.MEDIUM if score < HARD_FROM else DifficultyTier.HARD


def _tiers(scores: np.ndarray) -> list[DifficultyTier]:
    """`difficulty_tier` for a whole pool."""
    codes = np.digitize(scores, [EASY_BELOW, HARD_FROM])
    ranked = sorted(_TIER_RANK, key=_TIER_RANK.__getitem__)
    return [ranked[k] for k in codes.tolist()]


class _Draft:
    """The sample being built: what is taken, and the label and tier counts the quotas watch."""

    def __init__(self, pool: Sequence[Candidate], tiers: list[DifficultyTier], n: int, cap: int):
        self.pool, self.tiers, self.n, self.cap = pool, tiers, n, cap
        self.taken = bytearray(len(pool))
        self.label_counts: Counter[str] = Counter()
        self.tier_counts = {t: 0 for t in DifficultyTier}
        self.picks: list[tuple[int, str, str]] = []  # (pool index, quota, reason)

    @property
    def size(self) -> int:
        return len(self.picks)

    def fits(self, i: int) -> bool:
        """Untaken, and adding it keeps every label within the share cap."""
        return not self.taken[i] and all(self.label_counts[x] < self.cap for x in self.pool[i].labels)

    def is_free(self, i: int) -> bool:
        return not self.taken[i]

    def take(self, i: int, quota: str, reason: str) -> None:
        self.taken[i] = 1
        self.label_counts.update(self.pool[i].labels)
        self.tier_counts[self.tiers[i]] += 1
        self.picks.append((i, quota, reason))


class _TierQueues:
    """Candidates in seeded-random order, one queue per tier, filled lazily from `indices`.

    A candidate that does not fit is dropped for good: being taken and a label reaching its cap
    are both permanent while a phase runs, so each candidate is looked at once per queue, and
    only as far down the order as the sample needs.
    """

    def __init__(self, indices: Iterable[int], tiers: list[DifficultyTier]):
        self._source = iter(indices)
        self._tiers = tiers
        self._queues: dict[DifficultyTier, deque[int]] = {t: deque() for t in DifficultyTier}

    def pop_balanced(self, draft: _Draft, fits: Callable[[int], bool]) -> int | None:
        """Next fitting candidate from the tier the sample has fewest of; None when exhausted."""
        for tier in sorted(DifficultyTier, key=lambda t: (draft.tier_counts[t], _TIER_RANK[t])):
            if self._has_head(tier, fits):
                return self._queues[tier].popleft()
        return None

    def _has_head(self, tier: DifficultyTier, fits: Callable[[int], bool]) -> bool:
        queue = self._queues[tier]
        while True:
            while queue and not fits(queue[0]):
                queue.popleft()
            if queue:
                return True
            i = next(self._source, None)
            if i is None:
                return False
            self._queues[self._tiers[i]].append(i)


def draw_sample(pool: Sequence[Candidate], plan: SamplingPlan, label_ids: Sequence[str]) -> SampleResult:
    """Draw `plan.n` studies for expert review; see the module docstring for the quota order.

    Only `label_ids` get a `min_per_label` quota; the share cap applies to every label a
    candidate carries. "No finding" means no label at all.
    """
    pool = sorted(pool, key=attrgetter("study_id"))
    _check_unique(pool)
    order = np.random.default_rng(plan.seed).permutation(len(pool)).tolist()
    by_label = _index_by_label(pool, order)
    label_freq = {label: len(indices) for label, indices in by_label.items()}
    tiers = _tiers(_scores(pool, _rarest_freq(by_label, len(pool)), len(pool)))
    n = min(plan.n, len(pool))
    unmet = [f"sample: wanted {plan.n}, pool has {len(pool)}"] if n < plan.n else []
    draft = _Draft(pool, tiers, n, cap=max(1, math.floor(plan.max_label_share * n)))
    normals = _TierQueues((i for i in order if not pool[i].labels), tiers)
    n_normal = min(round(plan.no_finding_share * n), n)

    unmet += _fill_label_minimums(draft, by_label, label_ids, plan.min_per_label, n - n_normal)
    unmet += _fill_normals(draft, normals, n_normal, plan.no_finding_share)
    _fill_difficulty_spread(draft, order)
    unmet += _fill_leftovers(draft, normals, order, plan.max_label_share)
    return _result(draft, label_freq, unmet)


def _index_by_label(pool: Sequence[Candidate], order: list[int]) -> dict[str, list[int]]:
    """Pool indices carrying each label, in the seeded order (so quota picks are random)."""
    by_label: dict[str, list[int]] = {}
    for i in order:
        for label in pool[i].labels:
            by_label.setdefault(label, []).append(i)
    return by_label


def _rarest_freq(by_label: Mapping[str, list[int]], n_pool: int) -> np.ndarray:
    """Per study, the pool frequency of its rarest label (inf for no label)."""
    rarest = np.full(n_pool, np.inf)
    for indices in by_label.values():
        idx = np.asarray(indices, dtype=np.int64)
        rarest[idx] = np.minimum(rarest[idx], len(indices))
    return rarest


def _check_unique(pool: Sequence[Candidate]) -> None:
    for a, b in zip(pool, pool[1:], strict=False):
        if a.study_id == b.study_id:
            raise ValueError(f"study {a.study_id!r} appears twice in the candidate pool")


def _fill_label_minimums(
    draft: _Draft, by_label: Mapping[str, list[int]], label_ids: Sequence[str], minimum: int, budget: int
) -> list[str]:
    """Rarest label first, top each label up to `minimum`; return the quotas left short."""
    freq = {label: len(by_label.get(label, ())) for label in label_ids}
    unmet = []
    for label in sorted(freq, key=lambda x: (freq[x], x)):
        queues = _TierQueues(by_label.get(label, ()), draft.tiers)
        reason = f"needed for the minimum of {minimum} studies with {label} (rarest labels first)"
        while draft.label_counts[label] < minimum and draft.size < budget:
            i = queues.pop_balanced(draft, draft.fits)
            if i is None:
                break
            draft.take(i, f"min_per_label:{label}", reason)
        got, available = draft.label_counts[label], freq[label]
        if got < minimum:
            why = "" if available < minimum else ", the rest blocked by max_label_share or sample size"
            unmet.append(f"{label}: wanted {minimum}, pool has {available}, got {got}{why}")
    return unmet


def _fill_normals(draft: _Draft, normals: _TierQueues, n_normal: int, share: float) -> list[str]:
    got = 0
    while got < n_normal and draft.size < draft.n:
        i = normals.pop_balanced(draft, draft.is_free)
        if i is None:
            break
        draft.take(i, "no_finding_share", f"no-finding studies make up {share:.0%} of the sample")
        got += 1
    return [] if got == n_normal else [f"{NO_FINDING}: wanted {n_normal}, got {got}"]


def _fill_difficulty_spread(draft: _Draft, order: list[int]) -> None:
    queues = _TierQueues((i for i in order if draft.pool[i].labels), draft.tiers)
    while draft.size < draft.n:
        i = queues.pop_balanced(draft, draft.fits)
        if i is None:
            return
        draft.take(i, "difficulty_spread", f"spreads difficulty: a {draft.tiers[i]} study")


def _fill_leftovers(draft: _Draft, normals: _TierQueues, order: list[int], share: float) -> list[str]:
    """Last resort when abnormal studies within the cap ran out: more normals, then break the cap."""
    unmet, extra_normals = [], 0
    while draft.size < draft.n and (i := normals.pop_balanced(draft, draft.is_free)) is not None:
        draft.take(i, f"fill:{NO_FINDING}", "extra no-finding study: abnormal studies ran out")
        extra_normals += 1
    if extra_normals:
        unmet.append(f"{NO_FINDING}: {extra_normals} more than planned, abnormal studies ran out")
    queues, over_cap = _TierQueues(order, draft.tiers), 0
    while draft.size < draft.n and (i := queues.pop_balanced(draft, draft.is_free)) is not None:
        draft.take(i, "fill:over_cap", f"fills the sample past max_label_share {share:.0%}")
        over_cap += 1
    if over_cap:
        unmet.append(f"max_label_share {share:.0%}: exceeded by {over_cap} studies to reach n={draft.n}")
    return unmet


def _result(draft: _Draft, label_freq: Mapping[str, int], unmet: list[str]) -> SampleResult:
    selected = []
    for i, quota, reason in draft.picks:
        c = draft.pool[i]
        stratum = min(c.labels, key=lambda x: (label_freq[x], x)) if c.labels else NO_FINDING
        selected.append(Selection(c.study_id, c.patient_id, stratum, quota, draft.tiers[i], reason))
    selected.sort(key=attrgetter("study_id"))
    return SampleResult(selected, unmet, dict(draft.tier_counts), dict(sorted(draft.label_counts.items())))
