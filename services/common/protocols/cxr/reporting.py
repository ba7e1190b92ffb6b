"""The agreement and AI-versus-expert report, assembled from decided studies and their votes.

Pure: the rows come from `repo.report_rows`; every statistic is one of `agreement`'s reference-
checked functions. The report holds aggregates only (per label, per reader, per model, per tier),
never a study's labels, so it can be shown to curators without exposing the holdout.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict

from services.common.contracts import ModelProvenance, Verdict
from services.common.protocols.kit.agreement import (
    ai_vs_expert,
    fleiss_kappa,
    group_by,
    label_presence_table,
    provenance_key,
    reader_stats,
    verdict_shares,
)
from services.common.protocols.kit.decision import VoteView, effective_labels

REPORT_VERSION = "agreement/1"


def _votes_by_study(votes: Sequence[Mapping]) -> dict[str, list[VoteView]]:
    views = group_by(votes, lambda v: v["study_id"])
    return {sid: [VoteView(v["reader_id"], Verdict(v["verdict"]), frozenset(v["added_labels"]),
                           frozenset(v["removed_labels"])) for v in vs] for sid, vs in views.items()}


def reader_label_sets(studies: Sequence[Mapping], votes: Sequence[Mapping]) -> list[list[frozenset[str]]]:
    """Per study, each reader's effective label set, for studies with the modal number of votes.

    Fleiss' kappa needs the same number of raters per subject; a study with a missing or extra
    counted vote (a reassignment mid-read) is left out rather than distorting the statistic.
    """
    by_study = _votes_by_study(votes)
    sets = [[effective_labels(v, s["suggested"]) for v in by_study.get(s["study_id"], [])] for s in studies]
    sizes = Counter(len(x) for x in sets if len(x) >= 2)
    if not sizes:
        return []
    modal = sizes.most_common(1)[0][0]
    return [x for x in sets if len(x) == modal]


def kappa_per_label(sets: list[list[frozenset[str]]], label_ids: Sequence[str]) -> dict[str, float | None]:
    """Fleiss' kappa per label; None where it is not estimable (no studies, or one category only)."""
    if not sets:
        return {label: None for label in label_ids}
    return {label: _finite(fleiss_kappa(label_presence_table(sets, label))) for label in label_ids}


def reader_consensus(views: Sequence[VoteView], suggested: Sequence[str]) -> frozenset[str]:
    """The readers' label-wise majority: the truth the AI suggestion is compared against."""
    counts = Counter(label for v in views for label in effective_labels(v, suggested))
    return frozenset(label for label, k in counts.items() if 2 * k > len(views))


def agreement_report(studies: Sequence[Mapping], votes: Sequence[Mapping], label_ids: Sequence[str]) -> dict:
    """Everything `GET /api/v1/reports/agreement` and `radcurate report` show."""
    sets = reader_label_sets(studies, votes)
    by_study = _votes_by_study(votes)
    return {
        "report_version": REPORT_VERSION,
        "studies": {"decided": len(studies), "accepted": sum(bool(s["accepted"]) for s in studies),
                    "in_kappa": len(sets), "votes": len(votes)},
        "fleiss_kappa": kappa_per_label(sets, label_ids),
        "verdict_shares": _shares(studies, votes, label_ids),
        "readers": {r: asdict(st) for r, st in sorted(reader_stats(_VoteRow(v) for v in votes).items())},
        "ai_vs_expert": _ai_vs_expert(studies, by_study, label_ids),
    }


def _shares(studies: Sequence[Mapping], votes: Sequence[Mapping], label_ids: Sequence[str]) -> dict:
    """Overall, and per label over the votes on studies where that label was suggested."""
    suggested = {s["study_id"]: set(s["suggested"]) for s in studies}
    per_label = {label: _share_dict(v["verdict"] for v in votes if label in suggested.get(v["study_id"], ()))
                 for label in label_ids}
    return {"overall": _share_dict(v["verdict"] for v in votes), "per_label": per_label}


def _share_dict(verdicts) -> dict[str, float]:
    return {v.value: share for v, share in verdict_shares(verdicts).items()}


def _ai_vs_expert(studies: Sequence[Mapping], by_study: Mapping[str, list[VoteView]],
                  label_ids: Sequence[str]) -> dict:
    rows = [(s, (frozenset(s["suggested"]), reader_consensus(by_study.get(s["study_id"], []), s["suggested"])))
            for s in studies]

    def table(group: list) -> dict:
        return {"studies": len(group),
                "per_label": {k: asdict(c) for k, c in ai_vs_expert([r for _, r in group], label_ids).items()}}

    by_model = group_by(rows, lambda sr: _model_key(sr[0]))
    by_tier = group_by(rows, lambda sr: sr[0]["difficulty"])
    return {
        "overall": table(rows),
        "by_model": [{"extraction": dict(zip(("backend", "model", "prompt_version"), key[0], strict=True)),
                      "mapping": dict(zip(("backend", "model", "prompt_version"), key[1], strict=True)),
                      **table(group)} for key, group in sorted(by_model.items())],
        "by_difficulty": {tier: table(group) for tier, group in sorted(by_tier.items())},
    }


def _model_key(study: Mapping) -> tuple[tuple[str, str, str], tuple[str, str, str]]:
    return (provenance_key(ModelProvenance.model_validate(study["extraction"])),
            provenance_key(ModelProvenance.model_validate(study["mapping"])))


class _VoteRow:
    """A vote row seen through `agreement.VoteLike`."""

    __slots__ = ("study_id", "reader_id", "verdict", "seconds_spent")

    def __init__(self, row: Mapping) -> None:
        self.study_id, self.reader_id = row["study_id"], row["reader_id"]
        self.verdict, self.seconds_spent = Verdict(row["verdict"]), row["seconds_spent"]


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value
