"""Evaluate the offline report-understanding backend (rule extractor -> lexicon mapper).

Run `python -m radcurate.eval_labels [--data PATH] [--verbose]`. The gold set is hand-written
(tests/data/README.md states the labelling convention); a predicted label counts whether or not it
is flagged uncertain, because the product suggests hedged labels to readers, flagged.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from services.common.taxonomy import Taxonomy, load_taxonomy
from services.common.protocols.cxr.extract import extract_findings
from services.common.protocols.cxr.lexicon import map_findings

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "cxr_gold_reports.jsonl"


def load_rows(path: Path) -> list[dict[str, Any]]:
    """Gold rows: {"id", "report", "labels", "uncertain"} per line; blank lines ignored."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def predict(report: str, taxonomy: Taxonomy) -> tuple[set[str], set[str]]:
    """Suggested label ids and the subset flagged uncertain."""
    labels, _ = map_findings(extract_findings(report, taxonomy), taxonomy)
    return {s.label_id for s in labels}, {s.label_id for s in labels if s.uncertain}


def evaluate(rows: Iterable[dict[str, Any]], taxonomy: Taxonomy | None = None) -> dict[str, Any]:
    """Per-label precision/recall/F1/support, macro F1, misses and uncertain-flag agreement."""
    taxonomy = taxonomy or load_taxonomy()
    counts = {label_id: {"tp": 0, "fp": 0, "fn": 0} for label_id in taxonomy.label_ids}
    misses: list[dict[str, Any]] = []
    flag_agree = flag_total = n = 0
    for row in rows:
        n += 1
        gold, gold_uncertain = set(row["labels"]), set(row.get("uncertain", []))
        predicted, predicted_uncertain = predict(row["report"], taxonomy)
        for label_id, c in counts.items():
            kind = _outcome(label_id in gold, label_id in predicted)
            if kind:
                c[kind] += 1
            if kind in ("fp", "fn"):
                misses.append({"id": row["id"], "label": label_id, "kind": kind, "report": row["report"]})
        for label_id in gold & predicted:
            flag_total += 1
            flag_agree += (label_id in gold_uncertain) == (label_id in predicted_uncertain)
    per_label = {label_id: _scores(c) for label_id, c in counts.items()}
    return {
        "n_reports": n,
        "per_label": per_label,
        "macro_f1": sum(s["f1"] for s in per_label.values()) / len(per_label),
        "uncertain_flag_agreement": flag_agree / flag_total if flag_total else 1.0,
        "misses": misses,
    }


def _outcome(in_gold: bool, in_predicted: bool) -> str | None:
    if in_gold and in_predicted:
        return "tp"
    if in_predicted:
        return "fp"
    return "fn" if in_gold else None


def _scores(c: dict[str, int]) -> dict[str, float]:
    tp, fp, fn = c["tp"], c["fp"], c["fn"]
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": tp + fn, **c}


def throughput(rows: list[dict[str, Any]], taxonomy: Taxonomy, seconds: float = 1.0) -> float:
    """Reports per CPU-second of extract -> map, over repeated passes of `rows`.

    CPU time rather than wall time, so a busy shared machine does not understate the figure.
    """
    done, started = 0, time.process_time()
    while time.process_time() - started < seconds:
        for row in rows:
            predict(row["report"], taxonomy)
        done += len(rows)
    return done / (time.process_time() - started)


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{'label':32} {'prec':>6} {'rec':>6} {'f1':>6} {'support':>8}"]
    for label_id, s in result["per_label"].items():
        lines.append(
            f"{label_id:32} {s['precision']:6.3f} {s['recall']:6.3f} {s['f1']:6.3f} {s['support']:8d}"
        )
    lines.append(f"{'macro F1':32} {'':6} {'':6} {result['macro_f1']:6.3f} {result['n_reports']:8d} reports")
    lines.append(f"uncertain flag agreement on true positives: {result['uncertain_flag_agreement']:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="gold JSONL file")
    parser.add_argument("--verbose", action="store_true", help="list the misses")
    args = parser.parse_args(argv)
    taxonomy = load_taxonomy()
    rows = load_rows(args.data)
    result = evaluate(rows, taxonomy)
    print(f"taxonomy {taxonomy.version}, backend rules+lexicon, data {args.data}")
    print(format_table(result))
    print(f"throughput: {throughput(rows, taxonomy):,.0f} reports per CPU-second (one core)")
    if args.verbose:
        print("\nmisses:")
        for miss in result["misses"]:
            report = " ".join(miss["report"].split())
            print(f"  {miss['kind'].upper()} {miss['label']:30} {miss['id']}: {report[:160]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
