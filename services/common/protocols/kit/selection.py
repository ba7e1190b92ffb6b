"""Choose the benchmark from accepted studies and split it into released and holdout sets.

Pure logic. Selection favours what makes a benchmark informative: studies with rare labels and
several labels; normal studies only fill. The split balances label prevalence between the two
sides by iterative multi-label stratification (Sechidis, Tsoumakas & Vlahavas, 2011) over
PATIENTS, not studies: a model must never be scored on a patient whose other images it could
have been tuned on, so each patient's studies all land on one side.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter

import numpy as np

from services.common.contracts import SelectionPlan

NO_FINDING = "no_finding"
RELEASED, HOLDOUT = 0, 1


@dataclass(frozen=True)
class AcceptedStudy:
    study_id: str
    patient_id: str
    labels: frozenset[str]  # the consensus labels


@dataclass
class BenchmarkSplit:
    released: list[str]  # study ids, sorted
    holdout: list[str]  # study ids, sorted
    reasons: dict[str, str]  # study id -> why it was selected
    unmet: list[str]  # human-readable goals that could not be met
    label_counts: dict[str, tuple[int, int]]  # label (and "no_finding") -> (released, holdout)


def select_and_split(
    accepted: Sequence[AcceptedStudy], plan: SelectionPlan, label_ids: Sequence[str]
) -> BenchmarkSplit:
    """Select `plan.target_size` studies, then split off `plan.holdout_fraction` as holdout.

    Input order does not matter (studies are sorted by id first); the seed decides every tie.
    """
    chosen, reasons, unmet = select_benchmark(accepted, plan, label_ids)
    holdout_ids, split_unmet = split_by_patient(chosen, plan.holdout_fraction, label_ids, plan.seed)
    holdout = sorted(s.study_id for s in chosen if s.study_id in holdout_ids)
    released = sorted(s.study_id for s in chosen if s.study_id not in holdout_ids)
    counts = _label_counts(chosen, holdout_ids, label_ids)
    return BenchmarkSplit(released, holdout, reasons, unmet + split_unmet, counts)


# --- selection ----------------------------------------------------------------------------


def select_benchmark(
    accepted: Sequence[AcceptedStudy], plan: SelectionPlan, label_ids: Sequence[str]
) -> tuple[list[AcceptedStudy], dict[str, str], list[str]]:
    """The benchmark studies (sorted by id), why each was chosen, and the quotas left short.

    Order: `min_per_label` per label, rarest label first; then abnormal studies by priority
    (sum of label rarities, so rare and multi-label studies come first); then normals.
    """
    studies = sorted(accepted, key=attrgetter("study_id"))
    _check_unique(studies)
    target = min(plan.target_size, len(studies))
    unmet = []
    if target < plan.target_size:
        unmet.append(f"benchmark: wanted {plan.target_size}, {len(studies)} accepted")
    freq = Counter(label for s in studies for label in s.labels)
    tiebreak = np.random.default_rng(plan.seed).random(len(studies)).tolist()
    priority = {s.study_id: _priority(s, freq, len(studies)) for s in studies}
    ranked = sorted(
        (i for i, s in enumerate(studies) if s.labels),
        key=lambda i: (-priority[studies[i].study_id], tiebreak[i]),
    )
    picked: dict[int, str] = {}  # index -> reason, in pick order
    unmet += _pick_label_minimums(studies, ranked, label_ids, freq, plan.min_per_label, target, picked)
    _pick_by_priority(studies, ranked, priority, freq, target, picked)
    normals = sorted((i for i, s in enumerate(studies) if not s.labels), key=tiebreak.__getitem__)
    for i in normals[: max(target - len(picked), 0)]:
        picked[i] = "no finding: fills the benchmark after all abnormal studies"
    chosen = [studies[i] for i in sorted(picked)]
    return chosen, {studies[i].study_id: why for i, why in picked.items()}, unmet


def _priority(study: AcceptedStudy, freq: Mapping[str, int], n: int) -> float:
    """Sum of label rarities (log inverse prevalence): rare labels and label count both raise it."""
    return sum(math.log(max(n, 2) / freq[label]) for label in study.labels)


def _pick_label_minimums(
    studies: list[AcceptedStudy], ranked: list[int], label_ids: Sequence[str],
    freq: Mapping[str, int], minimum: int, target: int, picked: dict[int, str],
) -> list[str]:
    """Top every label up to `minimum`, rarest label first, best-priority studies first."""
    have: Counter[str] = Counter()
    unmet = []
    for label in sorted(label_ids, key=lambda x: (freq.get(x, 0), x)):
        for i in ranked:
            if have[label] >= minimum or len(picked) >= target:
                break
            if i not in picked and label in studies[i].labels:
                picked[i] = f"min_per_label: needed for {minimum} studies with {label} (rarest first)"
                have.update(studies[i].labels)
        if have[label] < minimum:
            available = freq.get(label, 0)
            unmet.append(f"{label}: wanted {minimum}, accepted pool has {available}, got {have[label]}")
    return unmet


def _pick_by_priority(
    studies: list[AcceptedStudy], ranked: list[int], priority: Mapping[str, float],
    freq: Mapping[str, int], target: int, picked: dict[int, str],
) -> None:
    for i in ranked:
        if len(picked) >= target:
            return
        if i not in picked:
            s = studies[i]
            rarest = min(s.labels, key=lambda x: (freq[x], x))
            picked[i] = f"priority {priority[s.study_id]:.2f}: {len(s.labels)} label(s), rarest {rarest}"


def _check_unique(studies: Sequence[AcceptedStudy]) -> None:
    for a, b in zip(studies, studies[1:]):
        if a.study_id == b.study_id:
            raise ValueError(f"study {a.study_id!r} accepted twice")


# --- split --------------------------------------------------------------------------------


@dataclass
class _Groups:
    """Studies grouped by patient, with each patient's per-label study counts."""

    patients: list[str]  # sorted
    members: list[list[str]]  # study ids per patient
    counts: np.ndarray  # patients x labels: studies of that patient carrying the label
    sizes: np.ndarray  # studies per patient


def split_by_patient(
    studies: Sequence[AcceptedStudy], holdout_fraction: float, label_ids: Sequence[str], seed: int
) -> tuple[set[str], list[str]]:
    """Holdout study ids, and what could not be met; every patient lands wholly on one side.

    Iterative stratification: take the label with the fewest studies still unplaced, and send
    each patient carrying it to the side that most lacks that label (then the side that most
    lacks studies). Rare labels go first because they are the easiest to unbalance. "No
    finding" counts as a label so normals are balanced too. A final pass moves whole patients
    to hit the holdout size exactly where patient sizes allow, and a local search swaps patients
of equal size while that brings label counts closer to the wanted ratio (the greedy pass is
weakest on the common labels it places last).
    """
    groups = _group_by_patient(studies, label_ids)
    if len(groups.patients) == 0:
        return set(), []
    rng = np.random.default_rng(seed)
    ratio = np.array([1 - holdout_fraction, holdout_fraction])
    side = _stratify(groups, ratio, rng)
    target = round(holdout_fraction * len(studies))
    _repair_size(groups, side, ratio, target)
    _refine_by_swaps(groups, side, ratio)
    holdout = {sid for g, members in enumerate(groups.members) if side[g] == HOLDOUT for sid in members}
    unmet = []
    if len(holdout) != target:
        unmet.append(f"split: holdout has {len(holdout)} studies, wanted {target} (whole patients only)")
    return holdout, unmet


def _group_by_patient(studies: Sequence[AcceptedStudy], label_ids: Sequence[str]) -> _Groups:
    columns = sorted(set(label_ids).union(*(s.labels for s in studies))) + [NO_FINDING]
    col = {label: j for j, label in enumerate(columns)}
    by_patient: dict[str, list[AcceptedStudy]] = {}
    for s in sorted(studies, key=attrgetter("study_id")):
        by_patient.setdefault(s.patient_id, []).append(s)
    patients = sorted(by_patient)
    counts = np.zeros((len(patients), len(columns)), dtype=np.int64)
    for g, p in enumerate(patients):
        for s in by_patient[p]:
            for label in s.labels or {NO_FINDING}:
                counts[g, col[label]] += 1
    sizes = np.array([len(by_patient[p]) for p in patients], dtype=np.int64)
    return _Groups(patients, [[s.study_id for s in by_patient[p]] for p in patients], counts, sizes)


def _stratify(groups: _Groups, ratio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sechidis et al.'s algorithm over patient groups; returns the side of each patient."""
    wanted_labels = np.outer(ratio, groups.counts.sum(axis=0)).astype(float)  # side x label
    wanted_size = ratio * groups.sizes.sum()
    tiebreak = rng.random(len(groups.patients))
    side = np.full(len(groups.patients), -1)
    remaining = groups.counts.sum(axis=0).astype(float)
    while (side < 0).any():
        label = int(np.argmin(np.where(remaining > 0, remaining, np.inf)))
        carriers = np.flatnonzero((side < 0) & (groups.counts[:, label] > 0))
        # larger patients first: they are the hard pieces to fit, as in bin packing
        for g in sorted(carriers.tolist(), key=lambda g: (-groups.sizes[g], tiebreak[g])):
            s = _best_side(wanted_labels[:, label], wanted_size, tiebreak[g])
            side[g] = s
            wanted_labels[s] -= groups.counts[g]
            wanted_size[s] -= groups.sizes[g]
            remaining -= groups.counts[g]
    return side


def _best_side(wanted_label: np.ndarray, wanted_size: np.ndarray, coin: float) -> int:
    """The side that most lacks the label, then the one that most lacks studies, then a coin."""
    for wanted in (wanted_label, wanted_size):
        if wanted[RELEASED] != wanted[HOLDOUT]:
            return int(np.argmax(wanted))
    return HOLDOUT if coin < 0.5 else RELEASED


def _repair_size(groups: _Groups, side: np.ndarray, ratio: np.ndarray, target: int) -> None:
    """Move whole patients until the holdout has `target` studies, hurting label balance least."""
    wanted = ratio[HOLDOUT] * groups.counts.sum(axis=0)
    for _ in range(len(side)):
        excess = int(groups.sizes[side == HOLDOUT].sum()) - target
        source = HOLDOUT if excess > 0 else RELEASED
        movable = np.flatnonzero((side == source) & (groups.sizes < 2 * abs(excess)))
        if excess == 0 or len(movable) == 0:
            return
        holdout_counts = groups.counts[side == HOLDOUT].sum(axis=0)
        sign = -1 if source == HOLDOUT else 1
        after = holdout_counts + sign * groups.counts[movable]
        cost = np.abs(after - wanted).sum(axis=1)
        gap = np.abs(abs(excess) - groups.sizes[movable])
        best = movable[np.lexsort((movable, cost, gap))[0]]
        side[best] = 1 - source


def _refine_by_swaps(groups: _Groups, side: np.ndarray, ratio: np.ndarray, max_rounds: int = 200) -> None:
    """Swap the equal-size released/holdout patient pair that most reduces label imbalance."""
    wanted = ratio[HOLDOUT] * groups.counts.sum(axis=0)
    for _ in range(max_rounds):
        released, holdout = np.flatnonzero(side == RELEASED), np.flatnonzero(side == HOLDOUT)
        if len(released) == 0 or len(holdout) == 0:  # one patient, or too few: no pair to swap
            return
        holdout_counts = groups.counts[holdout].sum(axis=0)
        now = np.abs(holdout_counts - wanted).sum()
        # after[r, h] = holdout counts once patient r moves in and patient h moves out
        after = holdout_counts + groups.counts[released][:, None, :] - groups.counts[holdout][None, :, :]
        cost = np.abs(after - wanted).sum(axis=2)
        cost[groups.sizes[released][:, None] != groups.sizes[holdout][None, :]] = np.inf
        r, h = np.unravel_index(np.argmin(cost), cost.shape)
        if not cost[r, h] < now - 1e-9:
            return
        side[released[r]], side[holdout[h]] = HOLDOUT, RELEASED


def _label_counts(
    chosen: Sequence[AcceptedStudy], holdout: set[str], label_ids: Sequence[str]
) -> dict[str, tuple[int, int]]:
    released_counts: Counter[str] = Counter()
    holdout_counts: Counter[str] = Counter()
    for s in chosen:
        (holdout_counts if s.study_id in holdout else released_counts).update(s.labels or {NO_FINDING})
    labels = sorted(set(label_ids) | set(released_counts) | set(holdout_counts))
    return {label: (released_counts[label], holdout_counts[label]) for label in labels}
