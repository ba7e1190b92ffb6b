"""Reader agreement and AI-versus-expert statistics for the CXR review dashboard.

Pure functions over plain values: no broker, no database. Every figure here must match the
reference implementation the field uses (statsmodels for Fleiss' kappa, scikit-learn for
precision / recall / F1) so that numbers in a RadCurate report can be checked by anyone.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from statistics import median
from typing import Protocol, TypeVar

import numpy as np

from services.common.contracts import Verdict

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

LabelRow = tuple[frozenset[str], frozenset[str]]  # (AI-suggested labels, reader consensus)


# --- Fleiss' kappa ------------------------------------------------------------------------


def fleiss_kappa(table: np.ndarray) -> float:
    """Fleiss' kappa of a subjects x categories table of rating counts.

    Same formula and operation order as statsmodels' `fleiss_kappa(method="fleiss")`, so the
    two agree to rounding. Every subject must have the same number (>= 2) of raters, because
    the statistic is only defined for a fixed panel size per subject.

    When chance agreement is 1 (every rating in the table falls in one category, e.g. all
    readers always say "absent"), kappa is 0/0: observed agreement is perfect but so is chance.
    We return `float("nan")` rather than 1 or 0, because either number would be a claim the
    data cannot support; callers show it as "not estimable".
    """
    counts = _validated_table(table)
    n_rat = counts.sum(axis=1).max()
    p_cat = counts.sum(axis=0) / counts.sum()
    p_rat = ((counts * counts).sum(axis=1) - n_rat) / (n_rat * (n_rat - 1.0))
    p_mean = p_rat.mean()
    p_mean_exp = (p_cat * p_cat).sum()
    if np.count_nonzero(p_cat) == 1:
        return float("nan")
    return float((p_mean - p_mean_exp) / (1 - p_mean_exp))


def _validated_table(table: np.ndarray) -> np.ndarray:
    """Reject tables kappa is not defined for, with a message that says why."""
    counts = 1.0 * np.asarray(table)
    if counts.ndim != 2 or counts.shape[0] == 0 or counts.shape[1] == 0:
        raise ValueError(f"expected a non-empty subjects x categories table, got {counts.shape}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0) or np.any(counts != np.round(counts)):
        raise ValueError("table must hold non-negative whole-number counts")
    raters = counts.sum(axis=1)
    if np.any(raters != raters[0]):
        raise ValueError("every subject must have the same number of raters")
    if raters[0] < 2:
        raise ValueError("kappa needs at least two raters per subject")
    return counts


def label_presence_table(
    reader_label_sets: Sequence[Sequence[frozenset[str]]], label_id: str
) -> np.ndarray:
    """Per study, how many of its readers marked `label_id` [absent, present].

    This is the table `fleiss_kappa` takes for one label's agreement across the panel.
    """
    rows = [
        (sum(label_id not in s for s in sets), sum(label_id in s for s in sets))
        for sets in reader_label_sets
    ]
    return np.array(rows, dtype=np.int64).reshape(len(rows), 2)


# --- verdicts and readers -----------------------------------------------------------------


def verdict_shares(verdicts: Iterable[Verdict]) -> dict[Verdict, float]:
    """Share of each vote option, every option present so charts keep a stable legend.

    With no votes all shares are 0.0 (not NaN) so the result stays JSON-serialisable.
    """
    counts: Counter[Verdict] = Counter()
    for value, n in Counter(verdicts).items():  # each distinct value checked once, not each vote
        counts[Verdict(value)] += n
    total = sum(counts.values())
    return {v: (counts[v] / total if total else 0.0) for v in Verdict}


class VoteLike(Protocol):
    """What `reader_stats` reads from a vote; `VoteCast` events satisfy it."""

    study_id: str
    reader_id: str
    verdict: Verdict
    seconds_spent: float | None


@dataclass(frozen=True)
class ReaderStats:
    reads: int
    majority_agreement: float | None  # None: none of their studies had a majority verdict
    median_seconds: float | None  # None: no timed reads


def majority_verdict(verdicts: Sequence[Verdict]) -> Verdict | None:
    """The verdict held by strictly more than half of a study's (>= 2) votes, else None.

    A lone vote is not a majority: agreeing with oneself would inflate a reader's agreement.
    """
    if len(verdicts) < 2:
        return None
    verdict, n = Counter(verdicts).most_common(1)[0]
    return verdict if 2 * n > len(verdicts) else None


def reader_stats(votes: Iterable[VoteLike]) -> dict[str, ReaderStats]:
    """Per reader: reads, agreement with each study's majority verdict, median seconds per read.

    Agreement counts only reads of studies that have a majority (see `majority_verdict`); the
    reader's own vote is part of that majority, as in the usual "agreement with majority"
    figure. Pass each reader's final vote per study: revisions would be counted twice.
    """
    votes = list(votes)
    by_study: dict[str, list[Verdict]] = defaultdict(list)
    for vote in votes:
        by_study[vote.study_id].append(Verdict(vote.verdict))
    majority = {study: majority_verdict(vs) for study, vs in by_study.items()}
    stats: dict[str, ReaderStats] = {}
    for reader, own in group_by(votes, lambda v: v.reader_id).items():
        judged = [v for v in own if majority[v.study_id] is not None]
        agreed = sum(Verdict(v.verdict) == majority[v.study_id] for v in judged)
        timed = [
            float(v.seconds_spent)
            for v in own
            if v.seconds_spent is not None and math.isfinite(v.seconds_spent)
        ]
        stats[reader] = ReaderStats(
            reads=len(own),
            majority_agreement=agreed / len(judged) if judged else None,
            median_seconds=median(timed) if timed else None,
        )
    return stats


# --- AI suggestion versus reader consensus ------------------------------------------------


@dataclass(frozen=True)
class LabelComparison:
    """One label's AI suggestions scored against the reader consensus as ground truth."""

    confirmed: int  # suggested and kept by the readers (true positive)
    removed: int  # suggested, removed by the readers (false positive)
    added: int  # not suggested, added by the readers (false negative)
    precision: float
    recall: float
    f1: float


def ai_vs_expert(
    rows: Iterable[LabelRow], label_ids: Sequence[str] | None = None
) -> dict[str, LabelComparison]:
    """Per label, how the AI-suggested labels fared against the reader consensus.

    Precision, recall and F1 follow scikit-learn with `zero_division=0`: a ratio whose
    denominator is zero is 0.0, so a label nobody suggested or found reads as 0, not NaN.
    Labels default to every label seen in either set, sorted.
    """
    rows = list(rows)
    if label_ids is None:
        label_ids = sorted(set().union(*(s | c for s, c in rows)))
    result = {}
    for label in label_ids:
        tp = sum(label in s and label in c for s, c in rows)
        fp = sum(label in s and label not in c for s, c in rows)
        fn = sum(label not in s and label in c for s, c in rows)
        result[label] = LabelComparison(
            confirmed=tp,
            removed=fp,
            added=fn,
            precision=_ratio(tp, tp + fp),
            recall=_ratio(tp, tp + fn),
            f1=_ratio(2 * tp, 2 * tp + fp + fn),
        )
    return result


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


# --- grouping -----------------------------------------------------------------------------


def group_by(items: Iterable[T], key: Callable[[T], K]) -> dict[K, list[T]]:
    """Items grouped by `key`, groups in first-seen order (for per-tier / per-model tables)."""
    groups: dict[K, list[T]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return dict(groups)


class ProvenanceLike(Protocol):
    backend: str
    model: str
    prompt_version: str


def provenance_key(provenance: ProvenanceLike) -> tuple[str, str, str]:
    """(backend, model, prompt_version): the unit an AI-quality comparison is reported per."""
    return (provenance.backend, provenance.model, provenance.prompt_version)


def ai_vs_expert_by_group(
    groups: Mapping[K, Iterable[LabelRow]], label_ids: Sequence[str] | None = None
) -> dict[K, dict[str, LabelComparison]]:
    """`ai_vs_expert` per group, e.g. per provenance key or per difficulty tier."""
    return {group: ai_vs_expert(rows, label_ids) for group, rows in groups.items()}


# --- ordinal grades (lumbar protocol) ------------------------------------------------------


def quadratic_weighted_kappa(a: Sequence[int], b: Sequence[int], n_categories: int) -> float:
    """Cohen's kappa with quadratic weights for two raters' ordinal ratings 0..n_categories-1.

    Same formula as scikit-learn's `cohen_kappa_score(weights="quadratic")`: disagreeing by two
    grades costs four times disagreeing by one, which is why ordinal grades use it. When chance
    disagreement is 0 (both raters always gave one and the same grade) kappa is 0/0 and, as in
    scikit-learn, NaN: perfect agreement on a constant is no evidence of reliability.
    """
    if len(a) != len(b) or not len(a):
        raise ValueError("two equally long, non-empty rating sequences are needed")
    observed = np.zeros((n_categories, n_categories))
    np.add.at(observed, (np.asarray(a), np.asarray(b)), 1)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / observed.sum()
    ranks = np.arange(n_categories)
    weights = (ranks[:, None] - ranks[None, :]) ** 2
    chance = float((weights * expected).sum())
    if chance == 0:
        return float("nan")
    return 1.0 - float((weights * observed).sum()) / chance


def mean_pairwise_qwk(ratings: Mapping[str, Mapping[Hashable, int]], n_categories: int,
                      min_shared: int = 2) -> float:
    """Agreement of K >= 2 readers on ordinal grades: the mean of `quadratic_weighted_kappa`
    over every pair of readers, each pair on the items both rated.

    `ratings` is reader -> item -> grade, so panels may differ per item (3 of 17 readers per
    study). Pairs sharing fewer than `min_shared` items, and pairs whose kappa is NaN (see
    above), are left out; NaN when no pair is left. With two readers this is their kappa.
    """
    readers = sorted(ratings)
    kappas = []
    for i, first in enumerate(readers):
        for second in readers[i + 1:]:
            shared = [item for item in ratings[first] if item in ratings[second]]
            if len(shared) < max(min_shared, 1):
                continue
            kappa = quadratic_weighted_kappa([ratings[first][s] for s in shared],
                                             [ratings[second][s] for s in shared], n_categories)
            if not math.isnan(kappa):
                kappas.append(kappa)
    return float(np.mean(kappas)) if kappas else float("nan")


# --- weighted forms for the patient bootstrap ----------------------------------------------


def fleiss_kappa_weighted(table: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Fleiss' kappa of `table` once per row of `weights` (replicates x subjects draw counts).

    A subject drawn twice counts twice, exactly as if its row were repeated: with weights of
    ones this is `fleiss_kappa(table)`. NaN where chance agreement is 1 in a replicate (see
    `fleiss_kappa`) or a replicate drew no subject.
    """
    counts = _validated_table(table)
    w = _as_weights(weights)
    return _fleiss_kappa_of_sums(counts, w, w.sum(axis=1), w @ counts)


def _fleiss_kappa_of_sums(counts: np.ndarray, w: np.ndarray, total: np.ndarray,
                          weighted_counts: np.ndarray) -> np.ndarray:
    """`fleiss_kappa_weighted` given each replicate's draw total and `w @ counts`."""
    n_rat = counts.sum(axis=1).max()
    p_rat = ((counts * counts).sum(axis=1) - n_rat) / (n_rat * (n_rat - 1.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        p_cat = weighted_counts / (total * n_rat)[:, None]
        p_mean = (w @ p_rat) / total
        p_exp = (p_cat * p_cat).sum(axis=1)
        kappa = (p_mean - p_exp) / (1 - p_exp)
    one_category = np.count_nonzero(p_cat > 0, axis=1) <= 1
    return np.where(one_category | (total == 0), np.nan, kappa)


def _as_weights(weights: np.ndarray) -> np.ndarray:
    return np.atleast_2d(np.asarray(weights, dtype=float))


def kappa_and_alpha_weighted(tables: Sequence[np.ndarray], weights: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per table (subjects x categories counts, every table over the same subjects, e.g. one per
    label): `fleiss_kappa_weighted` and nominal `krippendorff_alpha_weighted`, once per row of
    `weights`, the same values bit for bit.

    Both statistics weigh per-subject whole numbers by the draw counts: the category counts, and
    the coincidence counts over (raters - 1), whole for panels of 2 or 3. Such sums are exact in
    any order, so every table's are one matrix product (a release's card: 12 labels x 1,000
    replicates x 1,000 studies; one einsum and one product per label before, ~60 ms of ~110).
    Where a term is not whole (or a sum could pass 2**53) each table takes the per-table path,
    whose summation order the reference values come from."""
    w = _as_weights(weights)
    counts = [_validated_table(t) for t in tables]
    per_unit = [_coincidences_per_unit(c) for c in counts]
    if not counts:
        return []
    columns = np.concatenate([np.concatenate([c, u.reshape(len(c), -1)], axis=1)
                              for c, u in zip(counts, per_unit, strict=True)], axis=1)
    sums = _whole_number_product(w, columns)
    if sums is None:
        return [(fleiss_kappa_weighted(c, w), krippendorff_alpha_weighted(c, w)) for c in counts]
    total = w.sum(axis=1)
    out, at = [], 0
    for c in counts:
        values = c.shape[1]
        kappa = _fleiss_kappa_of_sums(c, w, total, sums[:, at:at + values])
        at += values
        # contiguous as einsum's output, so each replicate's matrix is summed in the same order
        coincidences = np.ascontiguousarray(sums[:, at:at + values * values]).reshape(-1, values, values)
        at += values * values
        out.append((kappa, _alphas_from_coincidences(coincidences, "nominal")))
    return out


def _whole_number_product(w: np.ndarray, x: np.ndarray) -> np.ndarray | None:
    """`w @ x` when every entry of both is a whole number and no partial sum can reach 2**53: then
    every product and sum is an exact integer, the same bits in whatever order BLAS, einsum or a
    replicate-at-a-time loop adds. None otherwise: the caller keeps its own order."""
    if w.size == 0 or x.size == 0 or not (np.array_equal(x, np.rint(x)) and np.array_equal(w, np.rint(w))):
        return None
    bound = max(abs(float(w.max())), abs(float(w.min()))) * float(np.abs(x).max()) * w.shape[1]
    return w @ x if bound < 2.0**53 else None


# --- Krippendorff's alpha -------------------------------------------------------------------

ALPHA_LEVELS = ("nominal", "ordinal")


def krippendorff_alpha(value_counts: np.ndarray, level: str = "nominal") -> float:
    """Krippendorff's alpha of a units x values table of rating counts (values in domain order).

    Same definition as the `krippendorff` package (`alpha(value_counts=..., level_of_measurement=
    ...)`): the coincidence matrix over pairable values, nominal distance 1 for any two different
    values, ordinal distance the squared count of values between them (Krippendorff 2011). Unlike
    kappa it allows a different number of raters per unit; a unit with one rating is unpairable
    and adds nothing. NaN when expected disagreement is 0 (every pairable value identical).
    """
    return float(krippendorff_alpha_weighted(value_counts, np.ones((1, len(value_counts))), level)[0])


def krippendorff_alpha_weighted(value_counts: np.ndarray, weights: np.ndarray, level: str = "nominal") -> np.ndarray:
    """`krippendorff_alpha` once per row of `weights` (replicates x units draw counts)."""
    if level not in ALPHA_LEVELS:
        raise ValueError(f"level must be one of {ALPHA_LEVELS}, got {level!r}")
    counts = 1.0 * np.asarray(value_counts)
    if counts.ndim != 2 or counts.shape[1] == 0:
        raise ValueError(f"expected a units x values table, got {counts.shape}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0) or np.any(counts != np.round(counts)):
        raise ValueError("table must hold non-negative whole-number counts")
    coincidences = np.einsum("bu,uvk->bvk", _as_weights(weights), _coincidences_per_unit(counts))
    return _alphas_from_coincidences(coincidences, level)


def _coincidences_per_unit(counts: np.ndarray) -> np.ndarray:
    """Each unit's coincidence matrix (units x values x values): its pairs of values over its
    pairable ratings - 1."""
    pairable = np.maximum(counts.sum(axis=1), 2)
    return (counts[:, :, None] * counts[:, None, :] - counts[:, :, None] * np.eye(counts.shape[1])) \
        / (pairable - 1)[:, None, None]


def _alphas_from_coincidences(o: np.ndarray, level: str) -> np.ndarray:
    """Krippendorff's alpha of each coincidence matrix in a stack (replicates x values x values), all
    at once: a release's bootstrap asks for ~1,000 replicates per label (one Python call each before;
    tests/unit/test_agreement.py keeps that one-matrix form as the reference)."""
    n_v = o.sum(axis=1)  # each matrix's column sums, as o.sum(axis=0) of one
    n = n_v.sum(axis=1)
    values = o.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = (n_v[:, :, None] * n_v[:, None, :] - n_v[:, :, None] * np.eye(values)) / (n - 1)[:, None, None]
        if level == "ordinal":
            distance = np.stack([_ordinal_distance(row) for row in n_v]) if len(n_v) else np.zeros_like(o)
        else:
            distance = np.broadcast_to(1.0 - np.eye(values), o.shape)
        disagreement = (expected * distance).sum(axis=(1, 2))
        alpha = 1.0 - (o * distance).sum(axis=(1, 2)) / disagreement
    return np.where((n <= 1) | (disagreement == 0), np.nan, alpha)


def _ordinal_distance(n_v: np.ndarray) -> np.ndarray:
    """(sum of n_g for g from c to k, minus (n_c + n_k) / 2) squared, for each value pair c <= k."""
    cumulative = np.concatenate([[0.0], np.cumsum(n_v)])
    low = np.minimum.outer(np.arange(len(n_v)), np.arange(len(n_v)))
    high = np.maximum.outer(np.arange(len(n_v)), np.arange(len(n_v)))
    between = cumulative[high + 1] - cumulative[low]
    return (between - (n_v[low] + n_v[high]) / 2) ** 2


def ai_vs_expert_counts_weighted(rows: Sequence[LabelRow], label_ids: Sequence[str],
                                 weights: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Per label, the AI's precision and recall against the readers, once per row of `weights`
    (replicates x rows draw counts), for bootstrap intervals. Unlike `ai_vs_expert`'s
    `zero_division=0`, a replicate whose denominator is 0 is NaN: it drops out of an interval
    instead of pulling it towards 0."""
    w = np.atleast_2d(np.asarray(weights, dtype=float))
    # Every label's tp/fp/fn indicators as the columns of one rows x (3 x labels) matrix: one
    # matrix product instead of three per label (a release computes this for ~10 groups of up to
    # 1,000 studies x 1,000 replicates). The sums are of whole numbers, so exact either way.
    # reshaped to rows x labels, which no rows (a report before any decision) can also take
    suggested = np.array([[label in s for label in label_ids] for s, _ in rows], dtype=bool).reshape(len(rows),
                                                                                                     len(label_ids))
    confirmed = np.array([[label in c for label in label_ids] for _, c in rows], dtype=bool).reshape(len(rows),
                                                                                                     len(label_ids))
    indicators = np.concatenate([suggested & confirmed, suggested & ~confirmed, ~suggested & confirmed], axis=1)
    sums = w @ indicators.astype(float)
    n = len(label_ids)
    out = {}
    for i, label in enumerate(label_ids):
        wtp, wfp, wfn = sums[:, i], sums[:, n + i], sums[:, 2 * n + i]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[label] = {"precision": np.where(wtp + wfp > 0, wtp / (wtp + wfp), np.nan),
                          "recall": np.where(wtp + wfn > 0, wtp / (wtp + wfn), np.nan)}
    return out
