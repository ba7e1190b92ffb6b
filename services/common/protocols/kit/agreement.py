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
    counts = Counter(Verdict(v) for v in verdicts)
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
