"""Evaluate the offline lumbar report grader (lumbar.extract -> lumbar.mapping) on a gold set.

Run `python -m radcurate.lumbar.eval [--data PATH] [--verbose]`. Gold rows are
`{"id", "report", "grades": {cell_id: grade}}`; a cell the row leaves out is Normal/Mild, as a
silent report is read; conventions are in services/common/protocols/lumbar/extract.py. Rows marked
`"split": "heldout"` were written after the rules were frozen: their figure is the honest one.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from services.common.protocols.lumbar.extract import extract_lumbar_grades
from services.common.protocols.lumbar.grid import CONDITIONS, LEVELS, Grade, cell_id
from services.common.protocols.lumbar.mapping import grade_grid, suggest_grades
from services.common.taxonomy import Taxonomy, load_taxonomy

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "tests" / "data" / "lumbar_gold_reports.jsonl"


def load_rows(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def predict(report: str, taxonomy: Taxonomy) -> dict[str, Grade]:
    """The suggested 25-cell grid for one report."""
    return grade_grid(suggest_grades(extract_lumbar_grades(report, taxonomy)))


def gold_grid(row: dict[str, Any]) -> dict[str, Grade]:
    given = {cell: Grade(value) for cell, value in row.get("grades", {}).items()}
    return {cell_id(c, lv): given.get(cell_id(c, lv), Grade.NORMAL_MILD)
            for c in CONDITIONS for lv in LEVELS}


def evaluate(rows: Iterable[dict[str, Any]], taxonomy: Taxonomy | None = None) -> dict[str, Any]:
    """Accuracy per condition and overall, per-grade precision/recall/F1, macro F1, misses."""
    taxonomy = taxonomy or load_taxonomy("lumbar")
    pairs: list[tuple[str, Grade, Grade]] = []  # (cell, gold, predicted)
    misses = []
    n = 0
    for row in rows:
        n += 1
        gold, predicted = gold_grid(row), predict(row["report"], taxonomy)
        for cell, grade in gold.items():
            pairs.append((cell, grade, predicted[cell]))
            if grade is not predicted[cell]:
                misses.append({"id": row["id"], "cell": cell, "gold": grade.value,
                               "predicted": predicted[cell].value})
    per_grade = {g.value: _f1(pairs, g) for g in Grade}
    return {
        "n_reports": n,
        "accuracy": _accuracy(pairs),
        "per_condition_accuracy": {c.value: _accuracy([p for p in pairs if p[0].startswith(c.value)])
                                   for c in CONDITIONS},
        "per_grade": per_grade,
        "macro_f1": sum(s["f1"] for s in per_grade.values()) / len(per_grade),
        "confusion": _confusion(pairs),
        "misses": misses,
    }


def _accuracy(pairs: list[tuple[str, Grade, Grade]]) -> float:
    return sum(g is p for _, g, p in pairs) / len(pairs) if pairs else 0.0


def _f1(pairs: list[tuple[str, Grade, Grade]], grade: Grade) -> dict[str, float]:
    """One-vs-rest precision/recall/F1 (scikit-learn's definition, zero_division=0)."""
    tp = sum(g is grade and p is grade for _, g, p in pairs)
    fp = sum(g is not grade and p is grade for _, g, p in pairs)
    fn = sum(g is grade and p is not grade for _, g, p in pairs)
    ratio = lambda a, b: a / b if b else 0.0  # noqa: E731
    return {"precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
            "f1": ratio(2 * tp, 2 * tp + fp + fn), "support": tp + fn}


def _confusion(pairs: list[tuple[str, Grade, Grade]]) -> dict[str, dict[str, int]]:
    counts = Counter((g, p) for _, g, p in pairs)
    return {g.value: {p.value: counts[(g, p)] for p in Grade} for g in Grade}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--verbose", action="store_true", help="list every wrong cell")
    parser.add_argument("--split", choices=("all", "dev", "heldout"), default="all",
                        help="dev: written while the rules were tuned; heldout: written after")
    args = parser.parse_args(argv)
    rows = [r for r in load_rows(args.data)
            if args.split == "all" or r.get("split", "dev") == args.split]
    result = evaluate(rows)
    if not args.verbose:
        result["misses"] = len(result["misses"])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
