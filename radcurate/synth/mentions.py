"""Decide what the report will say about each label, before any wording is chosen.

This is where the report departs from the truth, on purpose: real radiologists miss subtle
findings, hedge, over-call, and compare with the prior study. The fractions below describe
that behaviour; they are not tuned to any downstream funnel figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from radcurate.synth.cohort import StudyTruth, draw_side, pick
from radcurate.synth.labels import Label, Side

MISSED_SUBTLE_RATE = 0.35  # a subtle true finding is left out of the report (a miss)
UNCERTAIN_TRUE_RATE = 0.12  # a reported true finding is hedged ("possible", "cannot exclude")
OVERCALL_RATE = 0.02  # per study: one absent finding is asserted as present
HEDGE_FALSE_RATE = 0.06  # per study: one absent finding is hedged
STABLE_PHRASING_RATE = 0.60  # a finding also on the prior is called stable / unchanged
RESOLVED_PHRASING_RATE = 0.70  # a finding gone since the prior is said to have resolved

# Findings a reader plausibly imagines or hedges on; devices are never imagined.
OVERCALL_CANDIDATES = (Label.ATELECTASIS, Label.CONSOLIDATION, Label.PLEURAL_EFFUSION,
                       Label.CARDIOMEGALY, Label.PULMONARY_EDEMA, Label.LUNG_NODULE_MASS)
HEDGE_CANDIDATES = OVERCALL_CANDIDATES + (Label.PNEUMOTHORAX, Label.FRACTURE,
                                          Label.INTERSTITIAL_LUNG_DISEASE, Label.EMPHYSEMA,
                                          Label.MEDIASTINAL_HILAR_ABNORMALITY)


class Mention(StrEnum):
    """What the report says about a label (recorded in truth.jsonl as report_mentions)."""

    PRESENT = "present"
    UNCERTAIN = "uncertain"
    STABLE = "stable"  # present, and said to be unchanged since the prior
    NEGATED = "negated"
    RESOLVED = "resolved"  # said to be gone since the prior
    OMITTED = "omitted"  # truly present but not mentioned (missed)


POSITIVE_MENTIONS = (Mention.PRESENT, Mention.UNCERTAIN, Mention.STABLE)


@dataclass
class MentionPlan:
    """The report's stance on each label, and the side it will name."""

    mentions: dict[Label, Mention] = field(default_factory=dict)
    sides: dict[Label, Side | None] = field(default_factory=dict)
    overt: set[Label] = field(default_factory=set)  # described with the stronger severity words
    details: dict[Label, dict] = field(default_factory=dict)  # sizes, fixed once per study
    sentences: dict[Label, str] = field(default_factory=dict)  # so the impression repeats findings

    def positives(self) -> list[Label]:
        return [label for label, m in self.mentions.items() if m in POSITIVE_MENTIONS]


def _true_findings(plan: MentionPlan, truth: StudyTruth, rng: np.random.Generator) -> None:
    prior_labels = truth.prior.labels if truth.prior else ()
    for label in truth.labels:
        plan.sides[label] = truth.laterality.get(label)
        if label in truth.subtle and rng.random() < MISSED_SUBTLE_RATE:
            plan.mentions[label] = Mention.OMITTED
        elif label in prior_labels and rng.random() < STABLE_PHRASING_RATE:
            plan.mentions[label] = Mention.STABLE
        elif label is not Label.SUPPORT_DEVICES and rng.random() < UNCERTAIN_TRUE_RATE:
            plan.mentions[label] = Mention.UNCERTAIN
        else:
            plan.mentions[label] = Mention.PRESENT
        if label not in truth.subtle:
            plan.overt.add(label)


def _false_findings(plan: MentionPlan, truth: StudyTruth, rng: np.random.Generator) -> None:
    """Over-calls and hedges on findings the image does not show."""
    for rate, candidates, mention in ((OVERCALL_RATE, OVERCALL_CANDIDATES, Mention.PRESENT),
                                      (HEDGE_FALSE_RATE, HEDGE_CANDIDATES, Mention.UNCERTAIN)):
        if rng.random() >= rate:
            continue
        absent = [label for label in candidates if label not in plan.mentions]
        if absent:
            label = pick(rng, absent)
            plan.mentions[label] = mention
            plan.sides[label] = draw_side(rng, label)


def _resolved_findings(plan: MentionPlan, truth: StudyTruth, rng: np.random.Generator) -> None:
    if truth.prior is None:
        return
    for label in truth.prior.labels:
        if label not in plan.mentions and rng.random() < RESOLVED_PHRASING_RATE:
            plan.mentions[label] = Mention.RESOLVED
            plan.sides[label] = truth.prior.laterality.get(label)


def _negated_findings(plan: MentionPlan, rates: dict[Label, float], rng) -> None:
    """Pertinent negatives; a missed finding may be negated too, as in real misses."""
    for label, rate in rates.items():
        mention = plan.mentions.get(label)
        if mention in (None, Mention.OMITTED) and rng.random() < rate:
            plan.mentions[label] = Mention.NEGATED


def plan_mentions(truth: StudyTruth, negation_rates: dict[Label, float],
                  rng: np.random.Generator) -> MentionPlan:
    """The report's stance on every label it mentions, decided from the hidden truth."""
    plan = MentionPlan()
    _true_findings(plan, truth, rng)
    _false_findings(plan, truth, rng)
    _resolved_findings(plan, truth, rng)
    _negated_findings(plan, negation_rates, rng)
    return plan
