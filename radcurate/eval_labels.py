"""Evaluate the offline report-understanding backend (rule extractor -> lexicon mapper).

Run `python -m radcurate.eval_labels [--data PATH] [--openi DIR] [--verbose]`. Two gold sets:

- the project's hand-written set (tests/data/README.md states the labelling convention);
- real radiologists' reports, when present: the Open-i chest X-ray development set with the expert
  NegBio gold standard (`../shared/data/openi-dev/` beside the repository, or beside the main
  checkout when run from a linked git worktree, or `$RADCURATE_OPENI_DIR`).
  Its files are never copied into the repository. Its gold has 14 ChestX-ray14 columns; only the six
  labels whose definitions line up with the taxonomy are scored (the README of the folder maps them).
  The set is scored whole and split by uid parity (even: where rules are developed; odd: held out),
  so a rule that only fits one half shows up as a gap between the two.

A predicted label counts whether or not it is flagged uncertain, because the product suggests hedged
labels to readers, flagged.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from services.common.protocols.cxr.extract import extract_findings
from services.common.protocols.cxr.lexicon import map_findings
from services.common.taxonomy import Taxonomy, load_taxonomy

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT / "tests" / "data" / "cxr_gold_reports.jsonl"
OPENI_ENV = "RADCURATE_OPENI_DIR"
DEFAULT_OPENI = REPO_ROOT.parent / "shared" / "data" / "openi-dev"

# taxonomy label -> Open-i (NegBio) gold columns, for the labels whose definitions line up
OPENI_COLUMNS: dict[str, tuple[str, ...]] = {
    "atelectasis": ("Atelectasis",),
    "cardiomegaly": ("Cardiomegaly",),
    "consolidation": ("Consolidation", "Pneumonia", "Infiltration"),
    "pleural_effusion": ("Effusion",),
    "pneumothorax": ("Pneumothorax",),
    "lung_nodule_mass": ("Nodule", "Mass"),
}
# The Open-i gold marks a finding "when the report states it as present": stated or probable
# ("probable effusion", "atelectasis versus scar", "borderline cardiomegaly") is 1, only raised
# ("may represent pneumonia", "cannot exclude") is 0, and so is a loose descriptor ("airspace
# disease"). Suggestions are therefore scored on it from the "probable" confidence up; the
# project's own gold set counts every suggestion, hedged or not.
OPENI_STATED_CONFIDENCE = 0.75
# report.csv columns, in report order, with the section header each becomes
_OPENI_SECTIONS = (("indication", "INDICATION"), ("comparison", "COMPARISON"),
                   ("findings", "FINDINGS"), ("impression", "IMPRESSION"))


def load_rows(path: Path) -> list[dict[str, Any]]:
    """Gold rows: {"id", "report", "labels", "uncertain"} per line; blank lines ignored."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def openi_dir(explicit: Path | None = None, root: Path = REPO_ROOT) -> Path:
    """Where the Open-i development set is: `--openi`, else `$RADCURATE_OPENI_DIR`, else beside the
    repository, else beside the main checkout when `root` is a linked git worktree (a worktree sits
    elsewhere, and the real set was skipped there unless passed by hand)."""
    if explicit is not None:
        return explicit
    if os.environ.get(OPENI_ENV):
        return Path(os.environ[OPENI_ENV])
    beside = root.parent / "shared" / "data" / "openi-dev"
    main = _main_checkout(root)
    if main is not None and not beside.is_dir():
        beside_main = main.parent / "shared" / "data" / "openi-dev"
        if beside_main.is_dir():
            return beside_main
    return beside


def _main_checkout(root: Path) -> Path | None:
    """The main checkout of the repository a linked worktree belongs to, or None when `root` is not
    a linked worktree. Its `.git` is a file naming the worktree's git dir
    (`<main>/.git/worktrees/<name>`), whose `commondir` leads to the main `.git`."""
    marker = root / ".git"
    if not marker.is_file():
        return None
    try:
        key, _, value = marker.read_text(encoding="utf-8").partition(":")
        if key.strip() != "gitdir":
            return None
        gitdir = (root / value.strip()).resolve()
        commondir = gitdir / "commondir"
        common = (gitdir / commondir.read_text(encoding="utf-8").strip()).resolve() if commondir.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None
    return common.parent if common is not None and common.name == ".git" else None


def load_openi(folder: Path) -> list[dict[str, Any]]:
    """Open-i reports as gold rows, the report rebuilt with its section headers.

    The headers matter: INDICATION and COMPARISON text is not a finding, and the labeller must
    drop it the way it would in a real report.
    """
    gold_columns = {"filename", *(c for columns in OPENI_COLUMNS.values() for c in columns)}
    with (folder / "gold.csv").open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        _require_columns(folder / "gold.csv", reader.fieldnames, gold_columns)
        gold = {row["filename"].removeprefix("CXR"): row for row in reader}
    rows = []
    with (folder / "reports.csv").open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        _require_columns(folder / "reports.csv", reader.fieldnames, {"uid", *(c for c, _ in _OPENI_SECTIONS)})
        for record in reader:
            uid = record["uid"]
            if uid not in gold:
                continue
            report = "\n".join(
                f"{header}: {record[column].strip()}"
                for column, header in _OPENI_SECTIONS
                if record[column].strip()
            )
            labels = [
                label_id
                for label_id, columns in OPENI_COLUMNS.items()
                if any(gold[uid][column] == "1" for column in columns)
            ]
            rows.append({"id": f"CXR{uid}", "uid": int(uid), "report": report, "labels": labels, "uncertain": []})
    return rows


def _require_columns(path: Path, found: list[str] | None, needed: set[str]) -> None:
    missing = sorted(needed - set(found or ()))
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")


def predict(report: str, taxonomy: Taxonomy, min_confidence: float = 0.0) -> tuple[set[str], set[str]]:
    """Suggested label ids with at least `min_confidence`, and the subset flagged uncertain."""
    labels, _ = map_findings(extract_findings(report, taxonomy), taxonomy)
    labels = [s for s in labels if s.confidence >= min_confidence]
    return {s.label_id for s in labels}, {s.label_id for s in labels if s.uncertain}


def evaluate(
    rows: Iterable[dict[str, Any]],
    taxonomy: Taxonomy | None = None,
    label_ids: Iterable[str] | None = None,
    min_confidence: float = 0.0,
) -> dict[str, Any]:
    """Per-label precision/recall/F1/support, macro F1, misses and uncertain-flag agreement.

    `label_ids` limits scoring to labels the gold set covers (all taxonomy labels by default);
    `min_confidence` counts only suggestions at least that confident, for gold sets that mark
    what a report states rather than everything it raises (OPENI_STATED_CONFIDENCE).
    """
    taxonomy = taxonomy or load_taxonomy()
    scored = tuple(label_ids) if label_ids is not None else taxonomy.label_ids
    counts = {label_id: {"tp": 0, "fp": 0, "fn": 0} for label_id in scored}
    misses: list[dict[str, Any]] = []
    flag_agree = flag_total = n = 0
    for row in rows:
        n += 1
        gold, gold_uncertain = set(row["labels"]), set(row.get("uncertain", []))
        predicted, predicted_uncertain = predict(row["report"], taxonomy, min_confidence)
        for label_id, c in counts.items():
            kind = _outcome(label_id in gold, label_id in predicted)
            if kind:
                c[kind] += 1
            if kind in ("fp", "fn"):
                misses.append({"id": row["id"], "label": label_id, "kind": kind, "report": row["report"]})
        for label_id in gold & predicted & counts.keys():
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


def format_table(result: dict[str, Any], flag_agreement: bool = True) -> str:
    """Per-label P/R/F1/support, the macro F1 and (for gold sets that mark hedges) flag agreement."""
    lines = [f"{'label':32} {'prec':>6} {'rec':>6} {'f1':>6} {'support':>8}"]
    for label_id, s in result["per_label"].items():
        lines.append(
            f"{label_id:32} {s['precision']:6.3f} {s['recall']:6.3f} {s['f1']:6.3f} {s['support']:8d}"
        )
    lines.append(f"{'macro F1':32} {'':6} {'':6} {result['macro_f1']:6.3f} {result['n_reports']:8d} reports")
    if flag_agreement:
        lines.append(f"uncertain flag agreement on true positives: {result['uncertain_flag_agreement']:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="gold JSONL file")
    parser.add_argument(
        "--openi", type=Path, default=None,
        help=f"Open-i development set folder (default ${OPENI_ENV}, else {DEFAULT_OPENI},"
             " else beside the main checkout of a git worktree)",
    )
    parser.add_argument("--verbose", action="store_true", help="list the misses")
    parser.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per throughput measurement")
    args = parser.parse_args(argv)
    taxonomy = load_taxonomy()
    rows = load_rows(args.data)
    result = evaluate(rows, taxonomy)
    print(f"taxonomy {taxonomy.version}, backend rules+lexicon, data {args.data}")
    print(format_table(result))
    print(f"throughput: {throughput(rows, taxonomy, args.seconds):,.0f} reports per CPU-second (one core)")
    if args.verbose:
        _print_misses(result)
    folder = openi_dir(args.openi)
    if not (folder / "reports.csv").is_file() or not (folder / "gold.csv").is_file():
        print(f"\nOpen-i real-report set not found at {folder}: skipped (set ${OPENI_ENV} or --openi)")
        return 0
    try:
        openi = load_openi(folder)
    except ValueError as exc:
        print(f"error: Open-i set at {folder} is not in the expected format: {exc}")
        return 2
    for title, subset in (
        ("all", openi),
        ("even uids (development half)", [r for r in openi if r["uid"] % 2 == 0]),
        ("odd uids (held-out half)", [r for r in openi if r["uid"] % 2 == 1]),
    ):
        print(f"\nOpen-i real reports, {title}: {folder}")
        subset_result = evaluate(subset, taxonomy, OPENI_COLUMNS, OPENI_STATED_CONFIDENCE)
        print(format_table(subset_result, flag_agreement=False))
        if args.verbose and title == "all":
            _print_misses(subset_result)
    every = evaluate(openi, taxonomy, OPENI_COLUMNS)["macro_f1"]
    print(f"\n(all Open-i, counting every suggestion, weakly hedged and loose ones too: macro F1 {every:.3f})")
    print(f"throughput on real reports: {throughput(openi, taxonomy, args.seconds):,.0f}"
          " reports per CPU-second (one core)")
    return 0


def _print_misses(result: dict[str, Any]) -> None:
    print("\nmisses:")
    for miss in result["misses"]:
        report = " ".join(miss["report"].split())
        print(f"  {miss['kind'].upper()} {miss['label']:30} {miss['id']}: {report[:160]}")


if __name__ == "__main__":
    raise SystemExit(main())
