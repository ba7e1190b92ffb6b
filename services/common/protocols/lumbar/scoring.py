"""The RSNA 2024 Lumbar Spine Degenerative Classification metric.

RadCurate exports lumbar grading benchmarks in the competition's file layout, so it scores them
with the competition's metric: a sample-weighted log loss per condition group (spinal,
foraminal, subarticular), plus a study-level "any severe spinal stenosis" log loss, averaged.
Weights 1 / 2 / 4 by true grade make a missed Severe cost four times a missed Normal/Mild.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from services.common.protocols.lumbar.grid import CONDITIONS, LEVELS, Condition, Grade, Group, Level, cell_id  # noqa: F401  (re-exported)

# Probabilities are clipped to [EPS, 1 - EPS] with EPS the float64 machine epsilon: sklearn's
# `log_loss(eps="auto")` as Kaggle ran the competition metric in 2024.
EPS = float(np.finfo(np.float64).eps)
TARGET_COLUMNS = ("normal_mild", "moderate", "severe")
ROW_ID_COLUMN = "row_id"
MAX_NAMED = 5

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NON_FINITE = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}

_SUFFIXES = {f"_{c}_{lv}": (c, lv) for c in CONDITIONS for lv in LEVELS}

Probabilities = tuple[float, float, float]  # (normal_mild, moderate, severe)


METRIC_VERSION = "lumbar-rsna2024/1"


class SubmissionError(ValueError):
    """A submission cannot be scored; the message says what to fix."""


def row_id(study_id: str | int, condition: Condition | str, level: Level | str) -> str:
    """`<study_id>_<condition>_<level>`, the key of a submission row."""
    return f"{study_id}_{cell_id(condition, level)}"


def split_row_id(rid: str) -> tuple[str, Condition, Level]:
    """Inverse of `row_id`; matched on the known suffixes so any study id text survives."""
    for suffix, (condition, level) in _SUFFIXES.items():
        if rid.endswith(suffix) and len(rid) > len(suffix):
            return rid[: -len(suffix)], condition, level
    raise ValueError(f"not a row id of the form <study_id>_<condition>_<level>: {rid!r}")


# --- reading files ------------------------------------------------------------------------


def _csv_lines(csv_text: str, error: type[ValueError]) -> list[tuple[int, list[str]]]:
    """Non-blank rows with line numbers; an empty or unreadable file raises `error`."""
    text = csv_text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        lines = [(reader.line_num, r) for r in reader if any(cell.strip() for cell in r)]
    except csv.Error as exc:
        raise error(f"not a valid CSV file (line {reader.line_num}): {exc}") from None
    if not lines:
        raise error("the file is empty")
    return lines


def _summarise(what: str, examples: Sequence[str]) -> list[str]:
    if not examples:
        return []
    shown = ", ".join(examples[:MAX_NAMED]) + (", ..." if len(examples) > MAX_NAMED else "")
    return [f"{what}: {len(examples)} ({shown})"]


def _header_problems(header: list[str], expected: Sequence[str]) -> list[str]:
    duplicated = sorted(repr(c) for c, n in Counter(header).items() if n > 1)
    missing = [repr(c) for c in expected if c not in header]
    extra = [repr(c) for c in header if c not in expected]
    return (
        _summarise("repeated column names", duplicated)
        + _summarise("missing columns", missing)
        + _summarise("unexpected columns", extra)
    )


def truth_from_train_csv(csv_text: str) -> dict[str, Grade]:
    """Grades keyed by row id from a `train.csv`; empty cells are unscored and left out."""
    lines = _csv_lines(csv_text, ValueError)
    header = [cell.strip() for cell in lines[0][1]]
    columns = [f"{c}_{lv}" for c in CONDITIONS for lv in LEVELS]
    if problems := _header_problems(header, ["study_id", *columns]):
        raise ValueError("train.csv: " + "; ".join(problems))
    truth: dict[str, Grade] = {}
    seen: set[str] = set()
    for line_no, row in lines[1:]:
        if len(row) != len(header):
            raise ValueError(f"train.csv line {line_no}: {len(row)} fields, expected {len(header)}")
        cells = dict(zip(header, (cell.strip() for cell in row), strict=True))
        study_id = cells["study_id"]
        if not study_id or study_id in seen:
            raise ValueError(f"train.csv line {line_no}: empty or repeated study_id {study_id!r}")
        seen.add(study_id)
        for column in columns:
            if cells[column]:
                truth[f"{study_id}_{column}"] = _grade(cells[column], line_no)
    return truth


def _grade(text: str, line_no: int) -> Grade:
    try:
        return Grade(text)
    except ValueError:
        raise ValueError(f"train.csv line {line_no}: unknown grade {text!r}") from None


def parse_submission(csv_text: str) -> dict[str, Probabilities]:
    """Read `row_id,normal_mild,moderate,severe`; values must be finite and non-negative.

    Rows need not sum to 1 (scoring normalises them). Every problem found is reported at once.
    """
    lines = _csv_lines(csv_text, SubmissionError)
    header = [cell.strip() for cell in lines[0][1]]
    if problems := _header_problems(header, [ROW_ID_COLUMN, *TARGET_COLUMNS]):
        raise SubmissionError("; ".join(problems))
    cols = [header.index(c) for c in (ROW_ID_COLUMN, *TARGET_COLUMNS)]
    found: dict[str, list[str]] = defaultdict(list)
    rows: list[tuple[str, Probabilities]] = []
    for line_no, row in lines[1:]:
        if len(row) != len(header):
            found["lines with the wrong number of fields"].append(f"line {line_no}")
            continue
        rid, *cells = (row[j].strip() for j in cols)
        if not _is_row_id(rid):
            found["row ids not of the form <study_id>_<condition>_<level>"].append(repr(rid))
        values = tuple(_value(cell, f"line {line_no}", found) for cell in cells)
        rows.append((rid, values))  # type: ignore[arg-type]
    repeated = sorted(repr(r) for r, n in Counter(r for r, _ in rows).items() if n > 1)
    problems = [p for what, ex in found.items() for p in _summarise(what, ex)]
    problems += _summarise("repeated row ids", repeated)
    if problems:
        raise SubmissionError("; ".join(problems))
    return dict(rows)


def _is_row_id(rid: str) -> bool:
    try:
        split_row_id(rid)
    except ValueError:
        return False
    return True


def _value(cell: str, where: str, found: dict[str, list[str]]) -> float:
    """The cell as a non-negative finite number; problems are recorded, NaN returned."""
    if cell.lower() in _NON_FINITE:
        found["values that are NaN or infinite"].append(f"{where} {cell!r}")
    elif _NUMBER.fullmatch(cell) is None:
        found["values that are not numbers"].append(f"{where} {cell!r}")
    elif not math.isfinite(value := float(cell)):
        found["values that are NaN or infinite"].append(f"{where} {cell!r}")
    elif value < 0:
        found["negative values"].append(f"{where} {cell!r}")
    else:
        return value
    return float("nan")


# --- the metric ---------------------------------------------------------------------------


def log_loss(classes: np.ndarray, proba: np.ndarray, weights: np.ndarray) -> float:
    """Sample-weighted mean multi-class log loss with the semantics of sklearn's `log_loss` as
    Kaggle ran it: each value is first clipped to [EPS, 1 - EPS], *then* each row is normalised
    to sum 1. The order matters for rows that do not sum to 1 (a row of zeros becomes uniform;
    in [EPS, 5, 5] the first class ends below EPS). sklearn >= 1.5 no longer renormalises, so
    this is kept here rather than delegated.
    """
    proba = np.clip(np.asarray(proba, dtype=np.float64), EPS, 1 - EPS)
    proba = proba / proba.sum(axis=1, keepdims=True)
    losses = -np.log(proba[np.arange(len(classes)), classes])
    return float(np.average(losses, weights=weights))


def score_lumbar(truth: Mapping[str, Grade], submission: Mapping[str, Probabilities]) -> dict:
    """The competition score (lower is better) and its four terms.

    Only rows with a true grade are scored, but the submission must hold all 25 rows of every
    study in the truth, as the competition's sample submission does; asking for exactly the
    graded rows would tell a submitter which rows are ungraded.
    """
    _check_coverage(truth, submission)
    scored = [(*split_row_id(rid), grade, submission[rid]) for rid, grade in truth.items()]
    result: dict[str, float] = {}
    for group in Group:
        rows = [(grade, proba) for _, cond, _, grade, proba in scored if cond.group is group]
        if not rows:
            raise ValueError(f"the truth has no graded {group} rows")
        result[group.value] = _group_loss(rows)
    spinal = [(s, g, p) for s, cond, _, g, p in scored if cond is Condition.SPINAL_CANAL_STENOSIS]
    result["any_severe_spinal"] = any_severe_spinal_loss(spinal)
    return {"score": float(np.mean(list(result.values()))), **result}


def score_lumbar_with_intervals(truth: Mapping[str, Grade], submission: Mapping[str, Probabilities], *,
                                n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """`score_lumbar` plus `ci95`: percentile 95% intervals (2.5, 97.5) of the score and of each
    term over STUDIES resampled with replacement (a drawn study brings all its rows, since one
    study's levels are not independent readings). A replicate in which a term is undefined (no
    row of its group drawn) is dropped for that term and for the score. The point values are
    exactly `score_lumbar`'s; with `n_bootstrap=0` there is no `ci95`.
    """
    if n_bootstrap < 0:
        raise ValueError("n_bootstrap must be >= 0")
    result = score_lumbar(truth, submission)
    if n_bootstrap == 0:
        return result
    scored = [(*split_row_id(rid), grade, submission[rid]) for rid, grade in truth.items()]
    studies = sorted({s for s, *_ in scored})
    column = {s: i for i, s in enumerate(studies)}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(studies), size=(n_bootstrap, len(studies)))
    counts = np.stack([np.bincount(d, minlength=len(studies)) for d in draws]).astype(np.float64)
    terms: dict[str, np.ndarray] = {}
    for group in Group:
        rows = [(column[s], grade, proba) for s, cond, _, grade, proba in scored if cond.group is group]
        terms[group.value] = _replicate_losses(rows, counts)
    terms["any_severe_spinal"] = _replicate_severe_losses(
        [(s, g, p) for s, cond, _, g, p in scored if cond is Condition.SPINAL_CANAL_STENOSIS], column, counts)
    terms["score"] = np.mean(np.stack(list(terms.values())), axis=0)
    return {**result, "bootstrap_unit": "study", "n_bootstrap": n_bootstrap,
            "ci95": {name: _percentile_interval(values) for name, values in terms.items()}}


def _per_row_losses(classes: np.ndarray, proba: np.ndarray) -> np.ndarray:
    """Each row's log loss with `log_loss`'s clipping and renormalisation."""
    proba = np.clip(np.asarray(proba, dtype=np.float64), EPS, 1 - EPS)
    proba = proba / proba.sum(axis=1, keepdims=True)
    return -np.log(proba[np.arange(len(classes)), classes])


def _replicate_losses(rows: Sequence[tuple[int, Grade, Probabilities]], counts: np.ndarray) -> np.ndarray:
    """One group's weighted log loss in each replicate (rows weighted by their study's draw count)."""
    study = np.array([s for s, _, _ in rows])
    losses = _per_row_losses(np.array([g.index for _, g, _ in rows]), np.array([p for _, _, p in rows]))
    weights = counts[:, study] * np.array([g.weight for _, g, _ in rows], dtype=np.float64)
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (weights * losses).sum(axis=1) / total, np.nan)


def _replicate_severe_losses(rows: Iterable[tuple[str, Grade, Probabilities]], column: Mapping[str, int],
                             counts: np.ndarray) -> np.ndarray:
    """`any_severe_spinal_loss` in each replicate: per study as there, weighted by draw count."""
    by_study: dict[str, list[tuple[Grade, Probabilities]]] = defaultdict(list)
    for study_id, grade, proba in rows:
        by_study[study_id].append((grade, proba))
    label = np.array([any(g is Grade.SEVERE for g, _ in r) for r in by_study.values()], dtype=int)
    severe = np.clip(np.array([max(p[Grade.SEVERE.index] for _, p in r) for r in by_study.values()]), EPS, 1 - EPS)
    losses = -np.log(np.where(label == 1, severe, 1 - severe))
    weights = counts[:, [column[s] for s in by_study]] * np.array(
        [max(g.weight for g, _ in r) for r in by_study.values()], dtype=np.float64)
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (weights * losses).sum(axis=1) / total, np.nan)


def _percentile_interval(values: np.ndarray) -> tuple[float, float] | None:
    defined = values[~np.isnan(values)]
    if not defined.size:
        return None
    low, high = np.percentile(defined, [2.5, 97.5])
    return float(low), float(high)


def _group_loss(rows: Sequence[tuple[Grade, Probabilities]]) -> float:
    classes = np.array([grade.index for grade, _ in rows])
    weights = np.array([grade.weight for grade, _ in rows], dtype=np.float64)
    return log_loss(classes, np.array([proba for _, proba in rows]), weights)


def any_severe_spinal_loss(rows: Iterable[tuple[str, Grade, Probabilities]]) -> float:
    """Study-level binary log loss of "some spinal level is Severe".

    Per study (from its graded spinal rows): label = any Severe; prediction = the largest raw
    `severe` probability (not renormalised, then clipped); weight = the largest row weight.
    """
    by_study: dict[str, list[tuple[Grade, Probabilities]]] = defaultdict(list)
    for study_id, grade, proba in rows:
        by_study[study_id].append((grade, proba))
    label = np.array([any(g is Grade.SEVERE for g, _ in r) for r in by_study.values()])
    severe = np.array([max(p[Grade.SEVERE.index] for _, p in r) for r in by_study.values()])
    severe = np.clip(severe, EPS, 1 - EPS)  # a 1-D prediction: clipped before its complement is taken
    weight = np.array([max(g.weight for g, _ in r) for r in by_study.values()], dtype=float)
    return log_loss(label.astype(int), np.stack([1 - severe, severe], axis=1), weight)


def _check_coverage(truth: Mapping[str, Grade], submission: Mapping[str, Probabilities]) -> None:
    """Every row of every truth study must be submitted; rows of other studies may not be."""
    studies = {split_row_id(rid)[0] for rid in truth}
    expected = {row_id(s, c, lv) for s in studies for c in CONDITIONS for lv in LEVELS}
    missing = [repr(r) for r in sorted(expected - submission.keys())]
    unknown = [repr(r) for r in sorted(submission.keys() - expected)]
    problems = _summarise("missing rows", missing)
    problems += _summarise("rows for studies not in this benchmark", unknown)
    if problems:
        raise SubmissionError("; ".join(problems))
