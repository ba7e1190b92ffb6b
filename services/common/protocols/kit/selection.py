"""Choose the benchmark from accepted studies and split it into released and holdout sets.

Pure logic. Selection favours what makes a benchmark informative: studies with rare labels and
several labels, within the composition the curator's plan sets (shares of normal and single-label
studies, per-label minimum and maximum, a cap on any pair of labels co-occurring). The split
balances label prevalence between the two sides by iterative multi-label stratification
(Sechidis, Tsoumakas & Vlahavas, 2011) over PATIENTS, not studies: a model must never be
scored on a patient whose other images it could have been tuned on, so each patient's studies
all land on one side — and so do studies that share an image (SOP Instance UID, file hash or
pixel digest) or a DICOM patient (the keyed digest of the files' PatientID) under different patient
ids (one patient under two spellings, the same images under two study ids or re-exported).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
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
    # What identifies its images beyond the patient id (image_keys): studies sharing any of them
    # land on one side together, like a patient's studies.
    images: frozenset[str] = frozenset()


def image_keys(objects: Sequence[Mapping[str, object]]) -> frozenset[str]:
    """What ties a study's objects (DicomObject dicts) to other studies: SOP Instance UIDs, file
    hashes, pixel digests (the same image re-exported with other UIDs or another encoding) and the
    keyed digests of their DICOM PatientID (one patient under two patient ids). Studies that share
    any of them are one group for the split. Objects ingested before a digest existed lack it."""
    keys = {f"sop:{o['sop_instance_uid']}" for o in objects} | {f"sha256:{o['sha256']}" for o in objects}
    keys |= {f"pixels:{o['pixel_sha256']}" for o in objects if o.get("pixel_sha256")}
    keys |= {f"patient:{o['patient_key']}" for o in objects if o.get("patient_key")}
    return frozenset(keys)


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

NORMAL, SINGLE, MULTI = "normal", "single_label", "multi_label"


def group_of(labels: frozenset[str]) -> str:
    """normal (no label), single_label or multi_label: the composition a plan sets shares for."""
    return NORMAL if not labels else SINGLE if len(labels) == 1 else MULTI


@dataclass(frozen=True)
class Targets:
    """A plan resolved against a target size: how many studies per group, and per-label bounds."""

    size: int
    groups: dict[str, int | None]  # None: no quota (fills by priority)
    label_min: dict[str, int]
    label_max: dict[str, int]
    pair_max: int


def resolve_targets(plan: SelectionPlan, label_ids: Sequence[str], size: int) -> Targets:
    """Turn shares into study counts for a benchmark of `size` studies."""
    n_normal = None if plan.normal_share is None else round(plan.normal_share * size)
    n_single = None if plan.single_label_share is None else round(plan.single_label_share * size)
    n_multi = None if n_normal is None or n_single is None else size - n_normal - n_single
    default_max = max(1, math.floor(plan.max_label_share * size))
    bounds = plan.label_bounds
    label_min = {x: (bounds[x].min if x in bounds and bounds[x].min is not None else plan.min_per_label)
                 for x in label_ids}
    label_max = {x: (bounds[x].max if x in bounds and bounds[x].max is not None else max(default_max, label_min[x]))
                 for x in label_ids}
    return Targets(size, {NORMAL: n_normal, SINGLE: n_single, MULTI: n_multi}, label_min, label_max,
                   max(1, math.floor(plan.max_pair_share * size)))


class _Tally:
    """What has been picked so far, and whether another study still fits the plan."""

    def __init__(self, targets: Targets) -> None:
        self.targets = targets
        self.labels: Counter[str] = Counter()
        self.pairs: Counter[tuple[str, str]] = Counter()
        self.groups: Counter[str] = Counter()

    def fits(self, study: AcceptedStudy, *, quota: bool = True, caps: bool = True) -> bool:
        t = self.targets
        wanted = t.groups[group_of(study.labels)]
        if quota and wanted is not None and self.groups[group_of(study.labels)] >= wanted:
            return False
        if not caps:
            return True
        if any(self.labels[x] >= t.label_max.get(x, t.size) for x in study.labels):
            return False
        return all(self.pairs[p] < t.pair_max for p in _pairs(study.labels))

    def add(self, study: AcceptedStudy) -> None:
        self.labels.update(study.labels)
        self.pairs.update(_pairs(study.labels))
        self.groups[group_of(study.labels)] += 1


def _pairs(labels: frozenset[str]) -> list[tuple[str, str]]:
    ordered = sorted(labels)
    return [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:]]


def select_benchmark(
    accepted: Sequence[AcceptedStudy], plan: SelectionPlan, label_ids: Sequence[str]
) -> tuple[list[AcceptedStudy], dict[str, str], list[str]]:
    """The benchmark studies (sorted by id), why each was chosen, and what of the plan fell short.

    Order, every step within each label's maximum and the pair cap: per-label minimums, rarest
    label first (best-priority studies first); the normal quota; the single-label quota (rarest
    label first); the multi-label rest by priority (sum of label rarities, so rare and multi-label
    studies come first). When the pool cannot fill a quota, the other groups fill in, then the caps
    give way; each relaxation is named in the shortfall, never silent.
    """
    studies = sorted(accepted, key=attrgetter("study_id"))
    _check_unique(studies)
    size = min(plan.target_size, len(studies))
    unmet = []
    if size < plan.target_size:
        unmet.append(f"benchmark: wanted {plan.target_size}, {len(studies)} accepted")
    unmet += [f"label_bounds: {x} is not a label of this protocol, ignored"
              for x in sorted(set(plan.label_bounds) - set(label_ids))]
    targets = resolve_targets(plan, label_ids, size)
    freq = Counter(label for s in studies for label in s.labels)
    tiebreak = np.random.default_rng(plan.seed).random(len(studies)).tolist()
    priority = {s.study_id: _priority(s, freq, len(studies)) for s in studies}
    ranked = sorted(range(len(studies)), key=lambda i: (-priority[studies[i].study_id], tiebreak[i]))
    tally, picked = _Tally(targets), {}  # picked: index -> reason, in pick order

    def take(i: int, why: str) -> None:
        picked[i] = why
        tally.add(studies[i])

    unmet += _pick_label_minimums(studies, ranked, label_ids, freq, targets, tally, picked, take)
    quota = targets.groups
    phases = [{NORMAL}] if quota[NORMAL] is not None else []
    phases += [{SINGLE}, {MULTI}] if quota[SINGLE] is not None else [{SINGLE, MULTI}]
    phases += [{NORMAL}] if quota[NORMAL] is None else []  # no normal share: normals only fill
    for groups in phases:
        for i in ranked:
            if len(picked) >= size:
                break
            s = studies[i]
            if i not in picked and group_of(s.labels) in groups and tally.fits(s):
                take(i, _reason(s, priority, freq, quota[NORMAL] is None))
    if len(picked) < size:  # a quota the pool could not fill: others fill in, first within the caps
        _fill_shortfall(studies, ranked, size, tally, picked, take, priority, freq, unmet)
    unmet += _composition_shortfall(targets, tally, freq, len(studies))
    chosen = [studies[i] for i in sorted(picked)]
    return chosen, {studies[i].study_id: why for i, why in picked.items()}, unmet


def _reason(study: AcceptedStudy, priority: Mapping[str, float], freq: Mapping[str, int],
            normals_fill: bool = False) -> str:
    if not study.labels:
        return ("no finding: fills the benchmark after all abnormal studies" if normals_fill
                else "no finding: the plan's share of normal studies")
    rarest = min(study.labels, key=lambda x: (freq[x], x))
    return (f"{group_of(study.labels).replace('_', '-')} quota, priority {priority[study.study_id]:.2f}:"
            f" {len(study.labels)} label(s), rarest {rarest}")


def _fill_shortfall(studies: list[AcceptedStudy], ranked: list[int], size: int, tally: _Tally,
                    picked: dict[int, str], take: Callable[[int, str], None], priority: Mapping[str, float],
                    freq: Mapping[str, int], unmet: list[str]) -> None:
    """Fill what the quotas left empty from any group, within the caps first, then past them."""
    before = Counter(tally.groups)
    for caps in (True, False):
        for i in ranked:
            if len(picked) >= size:
                break
            if i not in picked and tally.fits(studies[i], quota=False, caps=caps):
                take(i, _reason(studies[i], priority, freq) + ("" if caps else " (over a label or pair cap)")
                     + " (fills a quota the pool could not)")
        if len(picked) >= size:
            break
    over = {g: tally.groups[g] - before[g] for g in (NORMAL, SINGLE, MULTI) if tally.groups[g] > before[g]}
    unmet.append("composition: quotas could not be filled as planned; filled with "
                 + ", ".join(f"{n} more {g}" for g, n in over.items()))


def _composition_shortfall(targets: Targets, tally: _Tally, freq: Mapping[str, int], pool: int) -> list[str]:
    """Every group quota, label maximum and pair cap the selection did not keep, by name."""
    notes = []
    for group, wanted in targets.groups.items():
        if wanted is not None and tally.groups[group] != wanted:
            notes.append(f"{group}: wanted {wanted}, got {tally.groups[group]}")
    for label, cap in sorted(targets.label_max.items()):
        if tally.labels[label] > cap:
            notes.append(f"{label}: at most {cap} wanted, got {tally.labels[label]}")
    for (a, b), n in sorted(tally.pairs.items()):
        if n > targets.pair_max:
            notes.append(f"{a} + {b}: at most {targets.pair_max} studies with both wanted, got {n}")
    return notes


def _priority(study: AcceptedStudy, freq: Mapping[str, int], n: int) -> float:
    """Sum of label rarities (log inverse prevalence): rare labels and label count both raise it."""
    return sum(math.log(max(n, 2) / freq[label]) for label in study.labels)


def _pick_label_minimums(
    studies: list[AcceptedStudy], ranked: list[int], label_ids: Sequence[str], freq: Mapping[str, int],
    targets: Targets, tally: _Tally, picked: dict[int, str], take: Callable[[int, str], None],
) -> list[str]:
    """Top every label up to its minimum, rarest label first, best-priority studies first; a
    study that would break a group quota or a cap is passed over while another carries the label."""
    unmet = []
    for label in sorted(label_ids, key=lambda x: (freq.get(x, 0), x)):
        minimum = targets.label_min[label]
        for relaxed in (False, True):
            for i in ranked:
                if tally.labels[label] >= minimum or len(picked) >= targets.size:
                    break
                s = studies[i]
                if i not in picked and label in s.labels and tally.fits(s, quota=not relaxed):
                    take(i, f"min_per_label: needed for {minimum} studies with {label} (rarest first)")
        if tally.labels[label] < minimum:
            unmet.append(f"{label}: wanted {minimum}, accepted pool has {freq.get(label, 0)},"
                         f" got {tally.labels[label]}")
    return unmet


def composition(studies: Sequence[AcceptedStudy], label_ids: Sequence[str]) -> dict:
    """What a benchmark is made of: groups, labels-per-study histogram, per-label counts and the
    co-occurrence matrix (label x label studies carrying both; the diagonal is the label's count)."""
    labels = list(label_ids)
    matrix = {a: {b: 0 for b in labels} for a in labels}
    for s in studies:
        for a in s.labels:
            for b in s.labels:
                if a in matrix and b in matrix:
                    matrix[a][b] += 1
    histogram = Counter(len(s.labels) for s in studies)
    return {
        "studies": len(studies),
        "groups": {g: sum(group_of(s.labels) == g for s in studies) for g in (NORMAL, SINGLE, MULTI)},
        "labels_per_study": {str(k): histogram[k] for k in range(max(histogram, default=0) + 1)},
        "per_label": {x: matrix[x][x] for x in labels},
        "co_occurrence": matrix,
        "max_pair": max(((matrix[a][b], f"{a} + {b}") for i, a in enumerate(labels) for b in labels[i + 1:]),
                        default=(0, "")),
    }


def plan_composition(plan: SelectionPlan, label_ids: Sequence[str], size: int) -> dict:
    """The composition the plan asks for at `size` studies, in `composition`'s terms."""
    t = resolve_targets(plan, label_ids, size)
    return {"studies": size, "groups": t.groups, "label_min": t.label_min, "label_max": t.label_max,
            "pair_max": t.pair_max}


def _check_unique(studies: Sequence[AcceptedStudy]) -> None:
    for a, b in zip(studies, studies[1:], strict=False):
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


def _linked_patients(studies: Sequence[AcceptedStudy]) -> dict[str, str]:
    """Each patient id -> the group it splits with: patients whose studies share an image_keys key
    (an image, or a DICOM patient) are one group (union-find), named by its smallest patient id."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    owner: dict[str, str] = {}
    for s in sorted(studies, key=attrgetter("study_id")):
        root(s.patient_id)
        for key in sorted(s.images):
            if key in owner:
                a, b = root(owner[key]), root(s.patient_id)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                owner[key] = s.patient_id
    return {p: root(p) for p in list(parent)}


def _group_by_patient(studies: Sequence[AcceptedStudy], label_ids: Sequence[str]) -> _Groups:
    columns = sorted(set(label_ids).union(*(s.labels for s in studies))) + [NO_FINDING]
    col = {label: j for j, label in enumerate(columns)}
    group_of = _linked_patients(studies)
    by_patient: dict[str, list[AcceptedStudy]] = {}
    for s in sorted(studies, key=attrgetter("study_id")):
        by_patient.setdefault(group_of[s.patient_id], []).append(s)
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
