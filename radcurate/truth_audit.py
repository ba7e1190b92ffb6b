"""How wrong is the benchmark? Its labels against the hidden truth (simulation only).

Pure: the benchmark's labels per split, each study's counted votes and the truth go in; per label
false positives and false negatives per split come out, with how many of the wrong studies a
stricter rule (every reader "Agree all") or one more reader would have caught, and what that
stricter rule would have cost in correct studies thrown away.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from services.common.contracts import Verdict

SPLITS = ("released", "holdout")


@dataclass(frozen=True)
class AuditedStudy:
    study_id: str
    split: str  # "released" or "holdout"
    labels: frozenset[str]  # what the benchmark says
    truth: frozenset[str]  # what the image shows
    verdicts: tuple[Verdict, ...]  # the counted votes that decided it
    fourth_reader_objects: bool | None = None  # None: no fourth read simulated


def audit(studies: Sequence[AuditedStudy], label_ids: Sequence[str]) -> dict:
    """Per split and label: false positives (labelled, not true) and false negatives (true, not
    labelled); studies with any error; and how many of those a stricter rule would have caught."""
    result: dict = {"studies": {}, "per_label": {}, "caught": {}}
    for split in SPLITS:
        mine = [s for s in studies if s.split == split]
        wrong = [s for s in mine if s.labels != s.truth]
        result["studies"][split] = {"total": len(mine), "with_error": len(wrong),
                                    "label_errors": sum(len(s.labels ^ s.truth) for s in mine)}
        result["per_label"][split] = {
            label: {"fp": sum(label in s.labels and label not in s.truth for s in mine),
                    "fn": sum(label in s.truth and label not in s.labels for s in mine)} for label in label_ids}
        result["caught"][split] = caught(mine)
    return result


def unanimous(s: AuditedStudy) -> bool:
    return bool(s.verdicts) and all(v == Verdict.AGREE_ALL for v in s.verdicts)


def caught(studies: Sequence[AuditedStudy]) -> dict:
    """Of the studies with an error: how many a 3/3 "Agree all" rule would have rejected, and how
    many a fourth reader would have objected to (not "Agree all"); and the price: correct studies
    the stricter rule would also have rejected, and correct ones a fourth reader would object to."""
    wrong = [s for s in studies if s.labels != s.truth]
    right = [s for s in studies if s.labels == s.truth]
    fourth = [s for s in studies if s.fourth_reader_objects is not None]
    return {
        "by_unanimous_rule": sum(not unanimous(s) for s in wrong),
        "correct_lost_to_unanimous_rule": sum(not unanimous(s) for s in right),
        "by_fourth_reader": sum(bool(s.fourth_reader_objects) for s in wrong) if fourth else None,
        "correct_flagged_by_fourth_reader": sum(bool(s.fourth_reader_objects) for s in right) if fourth else None,
    }


def audited_studies(benchmark: Mapping[str, Mapping[str, frozenset[str]]], truth: Mapping[str, frozenset[str]],
                    verdicts: Mapping[str, Sequence[Verdict]],
                    fourth: Callable[[str], bool] | None = None) -> list[AuditedStudy]:
    """`benchmark` is split -> study id -> labels; `fourth(study_id)` says whether one more reader
    would object. A benchmark study missing from the truth is an error in the inputs, not a pass."""
    missing = sorted(sid for split in benchmark.values() for sid in split if sid not in truth)
    if missing:
        raise ValueError(f"{len(missing)} benchmark studies are not in the truth file, e.g. {missing[0]}")
    return [AuditedStudy(sid, split, frozenset(labels), frozenset(truth[sid]), tuple(verdicts.get(sid, ())),
                         None if fourth is None else fourth(sid))
            for split, studies in benchmark.items() for sid, labels in sorted(studies.items())]


def render(result: Mapping, label_ids: Sequence[str]) -> list[str]:
    """The audit as a plain-text table."""
    lines = []
    for split in SPLITS:
        st, c = result["studies"][split], result["caught"][split]
        lines.append(f"{split}: {st['with_error']} of {st['total']} studies carry a label error"
                     f" ({st['label_errors']} wrong labels)")
        fourth = "n/a" if c["by_fourth_reader"] is None else c["by_fourth_reader"]
        lines.append(f"  caught by a 3/3 'Agree all' rule: {c['by_unanimous_rule']}"
                     f" (and {c['correct_lost_to_unanimous_rule']} correct studies lost);"
                     f" by a fourth reader: {fourth}")
    lines += ["", f"{'label':<34} {'released FP':>11} {'FN':>4} {'holdout FP':>11} {'FN':>4}"]
    for label in label_ids:
        r, h = result["per_label"]["released"][label], result["per_label"]["holdout"][label]
        lines.append(f"{label:<34} {r['fp']:>11} {r['fn']:>4} {h['fp']:>11} {h['fn']:>4}")
    return lines
