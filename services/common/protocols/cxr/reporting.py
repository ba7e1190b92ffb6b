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

import numpy as np

from services.common.contracts import ModelProvenance, Verdict
from services.common.protocols.kit.agreement import (
    ai_vs_expert,
    ai_vs_expert_counts_weighted,
    fleiss_kappa,
    group_by,
    kappa_and_alpha_weighted,
    provenance_key,
    reader_stats,
    verdict_shares,
)
from services.common.protocols.kit.bootstrap import DEFAULT_REPLICATES, patient_resample_weights, percentile_interval
from services.common.protocols.kit.decision import VoteView, effective_labels

REPORT_VERSION = "agreement/2"  # 2: patient-bootstrap intervals, Krippendorff's alpha
BOOTSTRAP_SEED = 0


def _votes_by_study(votes: Sequence[Mapping]) -> dict[str, list[VoteView]]:
    views = group_by(votes, lambda v: v["study_id"])
    return {sid: [VoteView(v["reader_id"], Verdict(v["verdict"]), frozenset(v["added_labels"]),
                           frozenset(v["removed_labels"])) for v in vs] for sid, vs in views.items()}


def reader_label_sets(studies: Sequence[Mapping], votes: Sequence[Mapping]) -> list[list[frozenset[str]]]:
    """Per study, each reader's effective label set, for studies with the modal number of votes.

    Fleiss' kappa needs the same number of raters per subject; a study with a missing or extra
    counted vote (a reassignment mid-read) is left out rather than distorting the statistic.
    """
    return [sets for sets, _ in kappa_units(studies, votes)]


def kappa_units(studies: Sequence[Mapping], votes: Sequence[Mapping]) -> list[tuple[list[frozenset[str]], str]]:
    """(reader label sets, patient id) of the studies `reader_label_sets` keeps, in study order."""
    by_study = group_by(votes, lambda v: v["study_id"])
    units = [(_effective_label_sets(s["suggested"], by_study.get(s["study_id"], ())),
              str(s.get("patient_id", s["study_id"]))) for s in studies]
    sizes = Counter(len(x) for x, _ in units if len(x) >= 2)
    if not sizes:
        return []
    modal = sizes.most_common(1)[0][0]
    return [(x, p) for x, p in units if len(x) == modal]


def _effective_label_sets(suggested: Sequence[str], votes: Sequence[Mapping]) -> list[frozenset[str]]:
    """`decision.effective_labels` of each vote row, read from the rows themselves: a `VoteView` per
    vote (its Verdict and two frozensets) was most of `kappa_units`'s CPU, and the sets need none."""
    base = frozenset(suggested)
    return [base.difference(v["removed_labels"]).union(v["added_labels"]) for v in votes]


def kappa_per_label(sets: list[list[frozenset[str]]], label_ids: Sequence[str], *,
                    tables: Mapping[str, np.ndarray] | None = None) -> dict[str, float | None]:
    """Fleiss' kappa per label; None where it is not estimable (no studies, or one category only).

    Each label's table is `label_presence_table`'s, counted for every label in one pass over the
    readers' sets instead of one pass per label (at 13,735 studies and 14 labels: ~20 ms of CPU
    instead of ~200 ms, for consensus's live gauge and every agreement report). `tables`: those
    tables when the caller has them (`card_agreement`)."""
    if not sets:
        return {label: None for label in label_ids}
    tables = presence_tables(sets, label_ids) if tables is None else tables
    return {label: _finite(fleiss_kappa(tables[label])) for label in label_ids}


def presence_tables(sets: list[list[frozenset[str]]], label_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Per label, `agreement.label_presence_table(sets, label)` (studies x [absent, present]
    readers), all counted in one pass over the readers' sets instead of one pass per label."""
    column = {label: j for j, label in enumerate(dict.fromkeys(label_ids))}
    rows, cols = [], []
    for i, study in enumerate(sets):
        for labels in study:
            for label in labels:
                if (j := column.get(label)) is not None:
                    rows.append(i)
                    cols.append(j)
    present = np.zeros((len(sets), len(column)), dtype=np.int64)
    np.add.at(present, (rows, cols), 1)
    raters = np.array([len(study) for study in sets], dtype=np.int64)
    return {label: np.column_stack((raters - present[:, j], present[:, j])) for label, j in column.items()}


def reader_consensus(views: Sequence[VoteView], suggested: Sequence[str]) -> frozenset[str]:
    """The readers' label-wise majority: the truth the AI suggestion is compared against."""
    counts = Counter(label for v in views for label in effective_labels(v, suggested))
    return frozenset(label for label, k in counts.items() if 2 * k > len(views))


def label_reliability(units: Sequence[tuple[list[frozenset[str]], str]], label_ids: Sequence[str],
                      n_bootstrap: int = DEFAULT_REPLICATES, seed: int = BOOTSTRAP_SEED, *,
                      tables: Mapping[str, np.ndarray] | None = None) -> dict:
    """Per label: Fleiss' kappa and Krippendorff's alpha (nominal) with patient-bootstrap 95% CIs.

    `units` are (each reader's label set, patient id) per study. Both statistics are computed on
    the same present/absent table; the intervals resample patients (see `bootstrap`), so a
    patient's repeat studies move together. A bound is None where no replicate is estimable.
    `tables`: `presence_tables` of the units' sets when the caller has them.
    """
    sets = [x for x, _ in units]
    kappa_ci: dict[str, tuple[float, float] | None] = dict.fromkeys(label_ids)
    alpha: dict[str, float | None] = dict.fromkeys(label_ids)
    alpha_ci: dict[str, tuple[float, float] | None] = dict.fromkeys(label_ids)
    if sets:
        tables = presence_tables(sets, label_ids) if tables is None else tables
        listed = [tables[label] for label in kappa_ci]
        weights = patient_resample_weights([p for _, p in units], n_bootstrap, seed)
        # every label's replicates, then the whole sample's alpha, each from one product over the
        # weights (see kappa_and_alpha_weighted) instead of one einsum and two products per label
        replicates = kappa_and_alpha_weighted(listed, weights)
        whole = kappa_and_alpha_weighted(listed, np.ones((1, len(sets))))
        for label, (kappas, alphas), (_, point) in zip(kappa_ci, replicates, whole, strict=True):
            kappa_ci[label] = percentile_interval(kappas)
            alpha[label] = _finite(float(point[0]))
            alpha_ci[label] = percentile_interval(alphas)
    return {"fleiss_kappa_ci95": kappa_ci, "krippendorff_alpha": alpha, "krippendorff_alpha_ci95": alpha_ci,
            "bootstrap": {"unit": "patient", "replicates": n_bootstrap, "seed": seed,
                          "patients": len({p for _, p in units}), "interval": "percentile 2.5-97.5"}}


def agreement_report(studies: Sequence[Mapping], votes: Sequence[Mapping], label_ids: Sequence[str],
                     n_bootstrap: int = DEFAULT_REPLICATES) -> dict:
    """Everything `GET /api/v1/reports/agreement` and `radcurate report` show: the card's part
    (`card_agreement`), then per reader and AI versus expert."""
    return {
        **card_agreement(studies, votes, label_ids, n_bootstrap),
        "readers": {r: asdict(st) for r, st in sorted(reader_stats(_VoteRow(v) for v in votes).items())},
        "ai_vs_expert": _ai_vs_expert(studies, _votes_by_study(votes), label_ids, n_bootstrap),
    }


def card_agreement(studies: Sequence[Mapping], votes: Sequence[Mapping], label_ids: Sequence[str],
                   n_bootstrap: int = DEFAULT_REPLICATES) -> dict:
    """The part of `agreement_report` a release's dataset card carries (benchmark.dataset_card),
    key for key the same values: what the release waits for once the last study is decided. It
    reads no provenance (`repo.report_rows(provenance=False)` is enough) and leaves out the AI
    versus expert tables, whose five patient bootstraps were most of the report's CPU."""
    units = kappa_units(studies, votes)
    sets = [x for x, _ in units]
    tables = presence_tables(sets, label_ids) if sets else {}
    return {
        "report_version": REPORT_VERSION,
        "studies": {"decided": len(studies), "accepted": sum(bool(s["accepted"]) for s in studies),
                    "in_kappa": len(sets), "votes": len(votes)},
        "fleiss_kappa": kappa_per_label(sets, label_ids, tables=tables),
        **label_reliability(units, label_ids, n_bootstrap, tables=tables),
        "verdict_shares": _shares(studies, votes, label_ids),
    }


def _shares(studies: Sequence[Mapping], votes: Sequence[Mapping], label_ids: Sequence[str]) -> dict:
    """Overall, and per label over the votes on studies where that label was suggested."""
    wanted = set(label_ids)
    suggested = {s["study_id"]: [label for label in set(s["suggested"]) if label in wanted] for s in studies}
    verdicts: dict[str, list[str]] = {label: [] for label in label_ids}
    for v in votes:  # one pass over the votes, not one per label
        for label in suggested.get(v["study_id"], ()):
            verdicts[label].append(v["verdict"])
    return {"overall": _share_dict(v["verdict"] for v in votes),
            "per_label": {label: _share_dict(verdicts[label]) for label in label_ids}}


def _share_dict(verdicts) -> dict[str, float]:
    return {v.value: share for v, share in verdict_shares(verdicts).items()}


def _ai_vs_expert(studies: Sequence[Mapping], by_study: Mapping[str, list[VoteView]],
                  label_ids: Sequence[str], n_bootstrap: int = DEFAULT_REPLICATES) -> dict:
    rows = [(s, (frozenset(s["suggested"]), reader_consensus(by_study.get(s["study_id"], []), s["suggested"])))
            for s in studies]

    def table(group: list) -> dict:
        """The group's per-label comparison, with patient-bootstrap 95% intervals of precision and recall."""
        weights = patient_resample_weights([str(s.get("patient_id", s["study_id"])) for s, _ in group], n_bootstrap,
                                           BOOTSTRAP_SEED)
        replicates = ai_vs_expert_counts_weighted([r for _, r in group], label_ids, weights)
        return {"studies": len(group),
                "per_label": {k: asdict(c) for k, c in ai_vs_expert([r for _, r in group], label_ids).items()},
                "ci95": {label: {m: percentile_interval(v) for m, v in reps.items()}
                         for label, reps in replicates.items()}}

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
