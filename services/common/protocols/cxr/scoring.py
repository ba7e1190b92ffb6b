"""Scoring a model's predictions on the CXR holdout set.

The holdout exists so that models can be compared on studies nobody trained or tuned on. Two
rules follow. First, nothing a submitter sees may depend on the holdout truth except the scores
themselves: file errors are computed without the truth (`parse_predictions` never receives it),
and the result carries no per-label positive counts. Second, the numbers must be checkable, so
each metric equals its scikit-learn counterpart and the bootstrap is seeded.

Note that per-label metrics are themselves a channel: repeated crafted submissions can recover
truth. Limiting how often a team may score is the gateway's job, not this module's.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from services.common.protocols.kit.bootstrap import patient_resample_weights
from services.common.protocols.kit.receipt import RECEIPT_TAG, receipt  # noqa: F401  (re-exported)

METRIC_VERSION = "cxr-holdout/1"
THRESHOLD = 0.5  # a probability >= THRESHOLD counts as a positive call
METRICS = ("auroc", "sensitivity", "specificity", "f1")
STUDY_ID_COLUMN = "study_id"
MAX_NAMED = 5  # how many ids / examples an error message lists before saying "..."

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NAN = {"nan", "+nan", "-nan"}
_INF = {"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


class PredictionFileError(ValueError):
    """A submitted predictions file cannot be scored; the message says why, never the truth."""


@dataclass(frozen=True)
class Predictions:
    """Validated probabilities, one row per study, one column per label."""

    study_ids: tuple[str, ...]
    label_ids: tuple[str, ...]
    probabilities: np.ndarray  # len(study_ids) x len(label_ids), values in [0, 1]

    def matrix(self, study_ids: Sequence[str], label_ids: Sequence[str]) -> np.ndarray:
        """The probabilities re-ordered to the given studies and labels."""
        rows = {s: i for i, s in enumerate(self.study_ids)}
        cols = {label: j for j, label in enumerate(self.label_ids)}
        index = np.ix_([rows[s] for s in study_ids], [cols[c] for c in label_ids])
        return self.probabilities[index]


# --- parsing ------------------------------------------------------------------------------


def parse_predictions(
    csv_text: str, label_ids: Sequence[str], expected_study_ids: Collection[str]
) -> Predictions:
    """Read a `study_id,<label>...` CSV of probabilities, or say everything wrong with it.

    Checks only the file against public facts (the label ids and the holdout study ids), so
    no message can leak truth. All problems are reported at once, each with a count and up to
    `MAX_NAMED` examples, so a submitter can fix the file in one go.
    """
    lines = _csv_lines(csv_text)
    header = [cell.strip() for cell in lines[0][1]]
    _check_header(header, label_ids)
    study_col = header.index(STUDY_ID_COLUMN)
    label_cols = [header.index(label) for label in label_ids]
    problems: list[str] = []
    study_ids: list[str] = []
    values: list[list[float]] = []
    bad_cells: dict[str, list[str]] = {}
    short_lines: list[str] = []
    for line_no, row in lines[1:]:
        if len(row) != len(header):
            short_lines.append(f"line {line_no} has {len(row)} fields, expected {len(header)}")
            continue
        study_ids.append(row[study_col].strip())
        values.append([_cell_value(row[j], line_no, header[j], bad_cells) for j in label_cols])
    problems += _summarise("lines with the wrong number of fields", short_lines)
    for kind, examples in bad_cells.items():
        problems += _summarise(f"values that are {kind}", examples)
    problems += _study_id_problems(study_ids, expected_study_ids)
    if problems:
        raise PredictionFileError("; ".join(problems))
    probabilities = np.array(values, dtype=np.float64).reshape(len(values), len(label_ids))
    probabilities.flags.writeable = False
    return Predictions(tuple(study_ids), tuple(label_ids), probabilities)


def _csv_lines(csv_text: str) -> list[tuple[int, list[str]]]:
    """Non-blank CSV rows with their line numbers; an empty file is an error."""
    text = csv_text.removeprefix("\ufeff")
    if not text.strip():
        raise PredictionFileError("the file is empty: expected a header and one row per study")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    lines = []
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                lines.append((reader.line_num, row))
    except csv.Error as exc:
        raise PredictionFileError(f"not a valid CSV file (line {reader.line_num}): {exc}") from None
    if not lines:
        raise PredictionFileError("the file is empty: expected a header and one row per study")
    return lines


def _check_header(header: list[str], label_ids: Sequence[str]) -> None:
    """Column problems make every row unreadable, so they stop parsing on their own."""
    expected = [STUDY_ID_COLUMN, *label_ids]
    problems = []
    duplicated = sorted(c for c, n in Counter(header).items() if n > 1)
    missing = [c for c in expected if c not in header]
    extra = [c for c in header if c not in expected]
    problems += _summarise("repeated column names", [_show(c) for c in duplicated])
    problems += _summarise("missing columns", [_show(c) for c in missing])
    problems += _summarise("unexpected columns", [_show(c) for c in extra])
    if problems:
        expected_text = ",".join(expected)
        raise PredictionFileError("; ".join(problems) + f" (expected header: {expected_text})")


def _cell_value(cell: str, line_no: int, column: str, bad: dict[str, list[str]]) -> float:
    """The cell as a probability; a bad cell is recorded under its kind and read as NaN."""
    text = cell.strip()
    where = f"line {line_no}, column {_show(column)}, value {_show(text)}"
    lowered = text.lower()
    if lowered in _NAN:
        kind = "NaN"
    elif lowered not in _INF and _NUMBER.fullmatch(text) is None:
        kind = "not numbers"
    elif not math.isfinite(value := float(text)):
        kind = "infinite"
    elif not 0.0 <= value <= 1.0:
        kind = "outside [0, 1]"
    else:
        return value
    bad.setdefault(kind, []).append(where)
    return float("nan")


def _study_id_problems(study_ids: list[str], expected: Collection[str]) -> list[str]:
    """Empty, duplicated, unknown and missing study ids. Ids are public; truth is not used."""
    expected_set = set(expected)
    present = set(study_ids)
    duplicated = sorted(s for s, n in Counter(study_ids).items() if n > 1 and s)
    unknown = sorted(s for s in present - expected_set if s)
    missing = sorted(expected_set - present)
    problems = []
    if "" in present:
        problems.append(f"rows with an empty {STUDY_ID_COLUMN}: {study_ids.count('')}")
    problems += _summarise("repeated study ids", [_show(s) for s in duplicated])
    problems += _summarise("study ids not in the holdout set", [_show(s) for s in unknown])
    problems += _summarise("missing holdout studies", [_show(s) for s in missing])
    return problems


def _summarise(what: str, examples: list[str]) -> list[str]:
    """'<what>: <n> (a, b, c, ...)' or nothing when there are no examples."""
    if not examples:
        return []
    shown = ", ".join(examples[:MAX_NAMED]) + (", ..." if len(examples) > MAX_NAMED else "")
    return [f"{what}: {len(examples)} ({shown})"]


def _show(text: str, limit: int = 40) -> str:
    """A submitter-supplied string quoted and cut short, so messages stay readable."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


# --- metrics ------------------------------------------------------------------------------


def auroc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties averaged.

    Equals scikit-learn's `roc_auc_score`; NaN when `y_true` holds only one class.
    """
    y = np.asarray(y_true, dtype=bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = average_rank[inverse.reshape(-1)][y].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def threshold_metrics(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Sensitivity, specificity and F1 at `THRESHOLD` for each row of study weights.

    `y`, `p`: studies x labels; `weights`: replicates x studies (a bootstrap resample is a
    vector of how often each study was drawn). Returns replicates x labels arrays.
    Sensitivity (specificity) is NaN without positives (negatives); F1 follows scikit-learn's
    `zero_division=0`.
    """
    called = p >= THRESHOLD
    tp = weights @ (y & called)
    fn = weights @ (y & ~called)
    fp = weights @ (~y & called)
    tn = weights @ (~y & ~called)
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        specificity = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    return {"sensitivity": sensitivity, "specificity": specificity, "f1": f1}


def weighted_auroc(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of one label for each row of study weights (NaN where a class is absent).

    Counts weighted (positive, negative) pairs with the positive ranked higher, ties half:
    the Mann-Whitney statistic of the resampled data, so it equals `auroc` on the resample.
    Cost is replicates x positives x negatives, one matrix product.
    """
    y = np.asarray(y, dtype=bool)
    pos, neg = scores[y], scores[~y]
    wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    w_pos, w_neg = weights[:, y], weights[:, ~y]
    pairs = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, ((w_pos @ wins) * w_neg).sum(axis=1) / pairs, np.nan)


def replicate_metrics(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """All `METRICS`, replicates x labels, for each row of study weights."""
    per_label = [weighted_auroc(y[:, j], p[:, j], weights) for j in range(y.shape[1])]
    aurocs = np.stack(per_label, axis=1) if per_label else np.empty((weights.shape[0], 0))
    return {"auroc": aurocs, **threshold_metrics(y, p, weights)}


def resample_counts(n_studies: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """Bootstrap resamples of studies as draw counts, replicates x studies (seeded)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_studies, size=(n_bootstrap, n_studies))
    offsets = n_studies * np.arange(n_bootstrap)[:, None]
    flat = np.bincount((draws + offsets).ravel(), minlength=n_bootstrap * n_studies)
    return flat.reshape(n_bootstrap, n_studies).astype(np.float64)


# --- scoring ------------------------------------------------------------------------------


def unscorable_labels(truth: Mapping[str, frozenset[str]], label_ids: Sequence[str]) -> list[str]:
    """Labels that are all-positive or all-negative in `truth`. Organiser-only: it is truth.

    Run it when a holdout is cut; a release should not go out with any.
    """
    y = _truth_matrix(truth, sorted(truth), label_ids)
    both = y.any(axis=0) & ~y.all(axis=0)
    return [label for label, ok in zip(label_ids, both, strict=True) if not ok]


def score_cxr(
    truth: Mapping[str, frozenset[str]],
    preds: Predictions,
    label_ids: Sequence[str],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    patients: Mapping[str, str] | None = None,
) -> dict:
    """Per-label and macro AUROC, sensitivity, specificity, F1, with bootstrap 95% intervals.

    A label with only one class in the truth has no AUROC, and reporting its sensitivity or
    specificity alone would reveal which class is missing. So every metric and interval of
    such a label is None, and macro averages are taken over the other labels only; the
    output then says "not scorable" and nothing more. `unscorable_labels` lets the organiser
    prevent this at release.

    Intervals are percentiles (2.5, 97.5) over PATIENTS resampled with replacement when
    `patients` (study id -> patient id) is given, each drawn patient bringing all their holdout
    studies (see `bootstrap`); without it, over studies (every study its own patient). Replicates
    where a metric is undefined (a class drawn zero times) are dropped for that metric, and a
    macro replicate is dropped if any of its labels is undefined in it.
    """
    if n_bootstrap < 0:
        raise ValueError("n_bootstrap must be >= 0")
    study_ids = sorted(truth)
    if not study_ids:
        raise ValueError("the holdout truth is empty")
    if set(study_ids) != set(preds.study_ids):
        raise ValueError("predictions and truth cover different studies; parse with holdout ids")
    y = _truth_matrix(truth, study_ids, label_ids)
    p = preds.matrix(study_ids, label_ids)
    scorable = y.any(axis=0) & ~y.all(axis=0)
    point = replicate_metrics(y, p, np.ones((1, len(study_ids))))
    point["auroc"] = np.array([[auroc(y[:, j], p[:, j]) for j in range(len(label_ids))]])
    if patients is None:
        weights = resample_counts(len(study_ids), n_bootstrap, seed)
    else:
        weights = patient_resample_weights([patients.get(s, s) for s in study_ids], n_bootstrap, seed)
    reps = replicate_metrics(y, p, weights)
    return {
        "metric_version": METRIC_VERSION,
        "threshold": THRESHOLD,
        "n_studies": len(study_ids),
        "bootstrap_unit": "study" if patients is None else "patient",
        "per_label": _per_label(point, label_ids, scorable, lambda v: _number(v[0])),
        "macro": {m: _macro(point[m], scorable, lambda v: _number(v[0])) for m in METRICS},
        "ci95": {
            "per_label": _per_label(reps, label_ids, scorable, _interval),
            "macro": {m: _macro(reps[m], scorable, _interval) for m in METRICS},
        },
    }


def _truth_matrix(
    truth: Mapping[str, frozenset[str]], study_ids: Sequence[str], label_ids: Sequence[str]
) -> np.ndarray:
    rows = [[label in truth[s] for label in label_ids] for s in study_ids]
    return np.array(rows, dtype=bool).reshape(len(study_ids), len(label_ids))


def _per_label(values, label_ids, scorable, summarise) -> dict:
    """Each scorable label's metrics summarised; every metric of the others is None."""
    return {
        label: {m: summarise(values[m][:, j]) if scorable[j] else None for m in METRICS}
        for j, label in enumerate(label_ids)
    }


def _macro(values: np.ndarray, scorable: np.ndarray, summarise):
    """Mean over scorable labels per replicate (NaN if any is undefined), then summarised."""
    if not scorable.any():
        return None
    return summarise(values[:, scorable].mean(axis=1))


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _interval(values: np.ndarray) -> tuple[float, float] | None:
    """Percentile 95% interval of the defined replicates; None when there are none."""
    defined = values[~np.isnan(values)]
    if defined.size == 0:
        return None
    low, high = np.percentile(defined, [2.5, 97.5])
    return (float(low), float(high))
