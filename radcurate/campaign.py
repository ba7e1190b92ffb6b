"""A review campaign simulated offline, before any radiologist is asked: `radcurate plan`.

The archive is synthetic (the same cohort and report generator as `radcurate synth`) and labelled
by the same rules extractor and lexicon mapper as the services; then every step calls the
services' own pure functions, never a copy: the sampler's `draw_sample` and `assign_readers`,
the consensus rule's `decide`, the benchmark's `select_and_split` and `composition`, and the
agreement report's Fleiss' kappa. Only the readers are simulated (`radcurate.simulate`).
"""

from __future__ import annotations

import gzip
import json
import os
import random
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from radcurate.simulate import DEFAULT_MODEL, ReaderModel, SimReader, Truth, make_reader
from radcurate.truth_audit import AuditedStudy, audit
from services.common.contracts import Finding, SamplingPlan, SelectionPlan, SuggestedLabel, Verdict
from services.common.protocols.cxr import candidate_from
from services.common.protocols.cxr.reporting import kappa_per_label, kappa_units, label_reliability
from services.common.protocols.kit.decision import CXR_RULE, VoteView
from services.common.protocols.kit.rule_config import RuleConfig, decide
from services.common.protocols.kit.sampling import draw_sample
from services.common.protocols.kit.selection import AcceptedStudy, composition, select_and_split
from services.common.taxonomy import load_taxonomy
from services.sampler.assignment import assign_readers

PROTOCOL = "cxr-label-verification"
POOL_CACHE_VERSION = "1"
# The rules a curator can compare. "majority-with-corrections" is the 2/3 rule whose close calls
# (a majority agreed at least mostly) a curator accepts with the readers' label-wise majority,
# i.e. the adjudication proposal the rule already makes, taken as is.
RULES = {"agree-all-2": 2, "agree-all-3": 3, "majority-with-corrections": 2}


@dataclass(frozen=True)
class PoolStudy:
    study_id: str
    patient_id: str
    truth: Truth
    suggested: tuple[SuggestedLabel, ...]
    unmapped: tuple[Finding, ...] = ()

    @property
    def labels(self) -> frozenset[str]:
        return frozenset(s.label_id for s in self.suggested)


# --- the archive ---------------------------------------------------------------------------


def _label_chunk(texts: list[tuple[str, str]]) -> list[tuple[list[dict], list[dict]]]:
    """Worker: the services' extractor and mapper on (study id, report) pairs."""
    from services.common.protocols.cxr.extract import extract_findings
    from services.common.protocols.cxr.lexicon import map_findings

    taxonomy = load_taxonomy("cxr")
    out = []
    for _, text in texts:
        suggested, unmapped = map_findings(extract_findings(text, taxonomy), taxonomy)
        out.append(([s.model_dump(mode="json") for s in suggested], [f.model_dump(mode="json") for f in unmapped]))
    return out


def synth_pool(n_studies: int, seed: int, cache_dir: Path | None = None, workers: int | None = None) -> list[PoolStudy]:
    """The synthetic archive of `radcurate synth --studies n --seed seed`, labelled; cached on disk
    because labelling 13,735 reports takes longer than the whole campaign simulation."""
    from radcurate.synth.cohort import build_cohort
    from radcurate.synth.cxr import COHORT_STREAM, _report_rng
    from radcurate.synth.report import write_report

    taxonomy = load_taxonomy("cxr")
    cache = None if cache_dir is None else \
        Path(cache_dir) / f"pool-{n_studies}-{seed}-{taxonomy.version}-v{POOL_CACHE_VERSION}.json.gz"
    if cache is not None and cache.exists():
        return _load_pool(cache)
    cohort = build_cohort(np.random.default_rng([seed, COHORT_STREAM]), n_studies)
    texts = [(t.study_id, write_report(t, _report_rng(seed, t.study_id)).text) for t in cohort]
    chunks = [texts[i:i + 500] for i in range(0, len(texts), 500)]
    workers = workers or max(1, min(len(os.sched_getaffinity(0)), 8))
    if workers == 1 or len(chunks) == 1:
        labelled = [row for chunk in chunks for row in _label_chunk(chunk)]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            labelled = [row for rows in pool.map(_label_chunk, chunks) for row in rows]
    rows = [{"study_id": t.study_id, "patient_id": t.patient_id, "labels": [str(x) for x in t.labels],
             "subtle": [str(x) for x in t.subtle], "suggested": s, "unmapped": u}
            for t, (s, u) in zip(cohort, labelled, strict=True)]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(gzip.compress(json.dumps(rows).encode()))
    return [_pool_study(r) for r in rows]


def _load_pool(path: Path) -> list[PoolStudy]:
    return [_pool_study(r) for r in json.loads(gzip.decompress(path.read_bytes()))]


def _pool_study(r: dict) -> PoolStudy:
    truth = Truth(frozenset(r["labels"]), frozenset(r["subtle"]), r["study_id"])
    return PoolStudy(r["study_id"], r["patient_id"], truth,
                     tuple(SuggestedLabel.model_validate(s) for s in r["suggested"]),
                     tuple(Finding.model_validate(f) for f in r["unmapped"]))


# --- one campaign --------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignPlan:
    sample_size: int = 1000
    readers_per_study: int = 3
    panel_size: int = 17
    rule: str = "agree-all-2"
    selection: SelectionPlan = field(default_factory=SelectionPlan)
    model: ReaderModel = DEFAULT_MODEL
    fourth_reader: bool = True  # simulate one more read of every benchmark study, for the audit
    bootstrap: int = 200  # patient-bootstrap replicates for kappa's interval (0: none)

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown rule {self.rule!r}; one of {', '.join(RULES)}")
        if RULES[self.rule] > self.readers_per_study:
            raise ValueError(f"rule {self.rule} needs {RULES[self.rule]} readers per study, plan has"
                             f" {self.readers_per_study}")
        if self.readers_per_study > self.panel_size:
            raise ValueError(f"{self.readers_per_study} readers per study need a panel of at least as many,"
                             f" got {self.panel_size}")


@dataclass
class CampaignOutcome:
    sampled: int
    accepted: int
    adjudicated: int  # accepted by taking the rule's adjudication proposal (majority-with-corrections)
    selected: int
    composition: dict
    audit: dict
    kappa: dict[str, float | None]
    reliability: dict  # kappa's patient-bootstrap CIs and Krippendorff's alpha, as the agreement report has them
    reader_hours: float
    unmet: list[str]


def candidates(pool: Sequence[PoolStudy]) -> list:
    """The sampler's view of the archive (its own `candidate_from`); compute once per archive."""
    return [candidate_from(SimpleNamespace(study_id=s.study_id, patient_id=s.patient_id, labels=list(s.suggested),
                                           unmapped_findings=list(s.unmapped))) for s in pool]


def run_campaign(pool: Sequence[PoolStudy], plan: CampaignPlan, seed: int,
                 pool_candidates: Sequence | None = None) -> CampaignOutcome:
    """One campaign with one seed: sample, assign, read, decide, select, audit."""
    label_ids = load_taxonomy("cxr").label_ids
    by_id = {s.study_id: s for s in pool}
    pool_candidates = candidates(pool) if pool_candidates is None else pool_candidates
    sample = draw_sample(pool_candidates, SamplingPlan(n=plan.sample_size, readers_per_study=plan.readers_per_study,
                                                  seed=seed), label_ids)
    rng = random.Random(seed)
    panel = {f"reader-{i:02d}": make_reader(f"reader-{i:02d}", "", rng, plan.model, panel_seed=seed)
             for i in range(1, plan.panel_size + 1)}
    study_ids = [sel.study_id for sel in sample.selected]
    assignment = assign_readers(study_ids, list(panel), plan.readers_per_study, seed=seed)
    rule = RuleConfig(protocol=PROTOCOL, rule=CXR_RULE, version=f"plan-{plan.rule}",
                      readers_per_study=plan.readers_per_study, min_agree_all=RULES[plan.rule])
    seconds, accepted, adjudicated = 0.0, [], 0
    votes: dict[str, list[VoteView]] = {}
    for sid in study_ids:
        study = by_id[sid]
        suggested = set(study.labels)
        views = []
        for reader_id in assignment[sid]:
            vote = panel[reader_id].judge(suggested, study.truth, label_ids)
            seconds += vote["seconds_spent"]
            views.append(VoteView(reader_id, Verdict(vote["verdict"]), frozenset(vote["added_labels"]),
                                  frozenset(vote["removed_labels"])))
        votes[sid] = views
        decision = decide(rule, views, sorted(suggested))
        if decision.accepted:
            accepted.append(AcceptedStudy(sid, study.patient_id, frozenset(decision.labels)))
        elif decision.needs_adjudication and plan.rule == "majority-with-corrections":
            accepted.append(AcceptedStudy(sid, study.patient_id, frozenset(decision.labels)))
            adjudicated += 1
    split = select_and_split(accepted, plan.selection, label_ids) if len(accepted) >= 2 else None
    labels = {a.study_id: a.labels for a in accepted}
    benchmark = {"released": split.released if split else [], "holdout": split.holdout if split else []}
    audited = [AuditedStudy(sid, name, labels[sid], by_id[sid].truth.labels, tuple(v.verdict for v in votes[sid]),
                            _fourth_objects(panel, assignment[sid], by_id[sid], label_ids, rng)
                            if plan.fourth_reader else None)
               for name, ids in benchmark.items() for sid in ids]
    chosen = [a for a in accepted if a.study_id in set(benchmark["released"]) | set(benchmark["holdout"])]
    kappa, reliability = _kappa(study_ids, by_id, votes, label_ids, plan.bootstrap)
    return CampaignOutcome(sampled=len(study_ids), accepted=len(accepted), adjudicated=adjudicated,
                           selected=len(chosen), composition=composition(chosen, label_ids),
                           audit=audit(audited, label_ids), kappa=kappa, reliability=reliability,
                           reader_hours=seconds / 3600,
                           unmet=list(sample.unmet_quotas) + (split.unmet if split else ["fewer than 2 accepted"]))


def _fourth_objects(panel: dict[str, SimReader], readers: Sequence[str], study: PoolStudy, label_ids: Sequence[str],
                    rng: random.Random) -> bool:
    """Whether a panel member who did not read the study would vote anything but "Agree all"."""
    others = sorted(set(panel) - set(readers))
    if not others:
        return False
    vote = panel[rng.choice(others)].judge(set(study.labels), study.truth, label_ids)
    return vote["verdict"] != Verdict.AGREE_ALL.value


def _kappa(study_ids: Sequence[str], by_id: dict[str, PoolStudy], votes: dict[str, list[VoteView]],
           label_ids: Sequence[str], n_bootstrap: int) -> tuple[dict[str, float | None], dict]:
    """Fleiss' kappa per label as the agreement report computes it, on every decided study, and
    its patient-bootstrap intervals and Krippendorff's alpha."""
    studies = [{"study_id": sid, "patient_id": by_id[sid].patient_id, "suggested": sorted(by_id[sid].labels)}
               for sid in study_ids]
    rows = [{"study_id": sid, "reader_id": v.reader_id, "verdict": v.verdict.value,
             "added_labels": sorted(v.added_labels), "removed_labels": sorted(v.removed_labels)}
            for sid in study_ids for v in votes[sid]]
    units = kappa_units(studies, rows)
    return kappa_per_label([x for x, _ in units], label_ids), label_reliability(units, label_ids, n_bootstrap)
