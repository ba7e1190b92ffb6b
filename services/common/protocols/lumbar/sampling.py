"""Sampling for the lumbar grading protocol: strata from the suggested grade grid.

A lumbar suggestion grades all 25 cells, so the CXR quotas (labels present or not) do not
apply. A study's stratum is its worst suggested grade: any Severe, else any Moderate, else all
Normal/Mild. Within the abnormal strata the rarest findings come first (a finding is a cell at
a grade, e.g. `left_subarticular_stenosis_l1_l2:Severe`), so a rare cell never loses its place
to the common L4/L5 ones; `no_finding_share` of the sample stays all Normal/Mild, because a
benchmark must also show that readers keep normal spines normal. Pure and deterministic: the
pool is sorted by study id and one seeded permutation breaks every tie.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from operator import attrgetter

import numpy as np

from services.common.contracts import LabelsSuggested, SamplingPlan
from services.common.protocols.kit.sampling import DifficultyTier, SampleResult, Selection
from services.common.protocols.lumbar.grid import Grade


class LumbarStratum(StrEnum):
    ANY_SEVERE = "any_severe"
    ANY_MODERATE = "any_moderate"
    ALL_NORMAL_MILD = "all_normal_mild"


@dataclass(frozen=True)
class GridCandidate:
    """A study in the pool, seen through its suggested grid."""

    study_id: str
    patient_id: str
    findings: frozenset[str]  # "<cell>:<grade>" for every cell suggested Moderate or Severe
    n_hedged: int = 0  # cells suggested from a hedged or ungraded mention

    @property
    def stratum(self) -> LumbarStratum:
        grades = {f.rsplit(":", 1)[1] for f in self.findings}
        if Grade.SEVERE.value in grades:
            return LumbarStratum.ANY_SEVERE
        return LumbarStratum.ANY_MODERATE if grades else LumbarStratum.ALL_NORMAL_MILD


def grid_candidate(s: LabelsSuggested) -> GridCandidate:
    findings = frozenset(f"{label.label_id}:{label.grade}" for label in s.labels
                         if label.grade and label.grade != Grade.NORMAL_MILD.value)
    return GridCandidate(s.study_id, s.patient_id, findings, sum(label.uncertain for label in s.labels))


def difficulty(c: GridCandidate) -> DifficultyTier:
    """Severe findings and hedged grades are where readers disagree most."""
    if c.stratum is LumbarStratum.ANY_SEVERE or c.n_hedged >= 2:
        return DifficultyTier.HARD
    if c.stratum is LumbarStratum.ANY_MODERATE or c.n_hedged == 1:
        return DifficultyTier.MEDIUM
    return DifficultyTier.EASY


def draw_lumbar_sample(pool: Sequence[GridCandidate], plan: SamplingPlan) -> SampleResult:
    """`plan.n` studies: the normal share from the all-Normal/Mild stratum, the rest from the
    abnormal strata rarest finding first; either side fills in when the other runs short."""
    pool = sorted(pool, key=attrgetter("study_id"))
    rank = {i: k for k, i in enumerate(np.random.default_rng(plan.seed).permutation(len(pool)).tolist())}
    freq = Counter(f for c in pool for f in c.findings)
    n = min(plan.n, len(pool))
    rarest = {i: min((freq[f] for f in c.findings), default=math.inf) for i, c in enumerate(pool)}
    abnormal = sorted((i for i, c in enumerate(pool) if c.findings), key=lambda i: (rarest[i], rank[i]))
    normal = sorted((i for i, c in enumerate(pool) if not c.findings), key=rank.__getitem__)
    n_normal = min(round(plan.no_finding_share * n), len(normal))
    n_abnormal = min(n - n_normal, len(abnormal))
    n_normal = min(n - n_abnormal, len(normal))
    picks = [(i, "rare_cells_first") for i in abnormal[:n_abnormal]] + \
            [(i, "no_finding_share") for i in normal[:n_normal]]
    unmet = [f"sample: wanted {plan.n}, pool has {len(pool)}"] if n < plan.n else []
    wanted_normal = round(plan.no_finding_share * n)
    if n_normal != wanted_normal:
        unmet.append(f"{LumbarStratum.ALL_NORMAL_MILD}: wanted {wanted_normal}, got {n_normal}")
    return _result(pool, picks, freq, rarest, unmet)


def _result(pool: Sequence[GridCandidate], picks: list[tuple[int, str]], freq: Counter,
            rarest: dict[int, float], unmet: list[str]) -> SampleResult:
    selected, tiers, counts = [], Counter(), Counter()
    for i, quota in picks:
        c = pool[i]
        tier = difficulty(c)
        tiers[tier] += 1
        counts.update(c.findings)
        counts[c.stratum.value] += 1
        if c.findings:
            cell = min(c.findings, key=lambda f: (freq[f], f))
            reason = f"{c.stratum}: rarest finding {cell} ({int(rarest[i])} in the pool); rare cells first"
        else:
            reason = "all Normal/Mild: the sample's share of normal spines"
        selected.append(Selection(c.study_id, c.patient_id, c.stratum.value, quota, tier, reason))
    selected.sort(key=attrgetter("study_id"))
    return SampleResult(selected, unmet, {t: tiers[t] for t in DifficultyTier}, dict(sorted(counts.items())))
