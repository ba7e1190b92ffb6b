"""Compose a free-text CXR report from the hidden truth, in one of several house styles.

Styles mirror what an archive really holds: terse ICU portables, structured outpatient
FINDINGS/IMPRESSION reports, impression-only reads, and follow-ups written against the prior.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from radcurate.synth import phrasing as P
from radcurate.synth.cohort import StudyTruth, pick
from radcurate.synth.labels import Label, Setting
from radcurate.synth.mentions import POSITIVE_MENTIONS, Mention, MentionPlan, plan_mentions
from radcurate.synth.wording import device_sentences, finding_sentence, finish, negation_sentences

TYPO_RATE = 0.04  # a dictation slip somewhere in the report
DEVICES_SUMMARY_RATE = 0.3  # a follow-up says "lines and tubes unchanged" without names
PARENCHYMA = {Label.ATELECTASIS, Label.CONSOLIDATION, Label.PULMONARY_EDEMA,
              Label.LUNG_NODULE_MASS, Label.INTERSTITIAL_LUNG_DISEASE, Label.EMPHYSEMA}


class ReportStyle(StrEnum):
    ICU_TERSE = "icu_terse"
    FINDINGS_IMPRESSION = "findings_impression"
    IMPRESSION_ONLY = "impression_only"
    COMPARISON = "comparison"


L = Label
# P(a pertinent negative is dictated | the label is not reported), per style.
NEGATION_RATES = {
    ReportStyle.ICU_TERSE: {L.PNEUMOTHORAX: 0.7, L.PLEURAL_EFFUSION: 0.35,
                            L.CONSOLIDATION: 0.2, L.PULMONARY_EDEMA: 0.2},
    ReportStyle.FINDINGS_IMPRESSION: {
        L.CONSOLIDATION: 0.8, L.PLEURAL_EFFUSION: 0.8, L.PNEUMOTHORAX: 0.8, L.CARDIOMEGALY: 0.75,
        L.MEDIASTINAL_HILAR_ABNORMALITY: 0.6, L.PULMONARY_EDEMA: 0.4, L.FRACTURE: 0.35,
        L.ATELECTASIS: 0.1, L.LUNG_NODULE_MASS: 0.1},
    ReportStyle.IMPRESSION_ONLY: {L.PNEUMOTHORAX: 0.4, L.PLEURAL_EFFUSION: 0.35,
                                  L.CONSOLIDATION: 0.35, L.CARDIOMEGALY: 0.2,
                                  L.PULMONARY_EDEMA: 0.2},
    ReportStyle.COMPARISON: {L.PNEUMOTHORAX: 0.6, L.PLEURAL_EFFUSION: 0.5, L.CONSOLIDATION: 0.5,
                             L.CARDIOMEGALY: 0.4, L.PULMONARY_EDEMA: 0.3},
}


@dataclass(frozen=True)
class Report:
    text: str
    style: ReportStyle
    mentions: dict[str, str]  # label id -> Mention value


def choose_style(truth: StudyTruth, rng: np.random.Generator) -> ReportStyle:
    if truth.setting is Setting.ICU:
        return ReportStyle.ICU_TERSE if rng.random() < 0.75 else ReportStyle.IMPRESSION_ONLY
    if truth.prior is not None and rng.random() < 0.55:
        return ReportStyle.COMPARISON
    return ReportStyle.FINDINGS_IMPRESSION if rng.random() < 0.65 else ReportStyle.IMPRESSION_ONLY


def _finding_lines(plan: MentionPlan, truth: StudyTruth, rng) -> list[str]:
    """Positive, hedged, stable and resolved findings, devices first as radiologists list them."""
    summarise = rng.random() < DEVICES_SUMMARY_RATE
    lines = device_sentences(plan, truth, rng, summarise)
    for label, mention in plan.mentions.items():
        if label is not Label.SUPPORT_DEVICES and mention in (*POSITIVE_MENTIONS, Mention.RESOLVED):
            lines.append(finding_sentence(label, plan, truth, rng))
    return lines


def _lungs_line(plan: MentionPlan, rng) -> list[str]:
    if not any(plan.mentions.get(label) in POSITIVE_MENTIONS for label in PARENCHYMA):
        return [finish(pick(rng, P.LUNGS_CLEAR))]
    return [finish(pick(rng, P.LUNGS_OTHERWISE_CLEAR))] if rng.random() < 0.4 else []


def _impression(plan: MentionPlan, truth: StudyTruth, rng) -> str:
    """Up to three key findings re-worded, or a normal impression."""
    keys = [label for label in plan.positives() if label is not Label.SUPPORT_DEVICES][:3]
    if not keys:
        return finish(pick(rng, P.NORMAL_IMPRESSION))
    lines = [finding_sentence(label, plan, truth, rng) for label in keys]
    return lines[0] if len(lines) == 1 else "\n".join(f"{i}. {s}" for i, s in enumerate(lines, 1))


def _when(truth: StudyTruth | None) -> str:
    return truth.study_date.strftime("%m/%d/%Y") if truth else "None"


def _icu_terse(plan: MentionPlan, truth: StudyTruth, rng) -> str:
    head = pick(rng, ("PORTABLE AP CHEST {t}.", "AP portable chest radiograph at {t}.",
                      "Single portable AP view of the chest, {t}."))
    lines = [head.format(t=f"{truth.study_time[:2]}:{truth.study_time[2:4]}")]
    if truth.prior is not None:
        lines.append(f"Compared to {_when(truth.prior)}.")
    lines += _finding_lines(plan, truth, rng) + negation_sentences(plan, rng)
    return "\n".join(lines) if rng.random() < 0.5 else " ".join(lines)


def _findings_impression(plan: MentionPlan, truth: StudyTruth, rng) -> str:
    view = "PA AND LATERAL" if truth.view_position == "PA" else "AP PORTABLE"
    findings = (_finding_lines(plan, truth, rng) + _lungs_line(plan, rng)
                + negation_sentences(plan, rng))
    return (f"EXAMINATION: CHEST {view}\n"
            f"INDICATION: {pick(rng, P.INDICATIONS[truth.setting.value])}\n"
            f"COMPARISON: {_when(truth.prior)}.\n\n"
            f"FINDINGS:\n{' '.join(findings)}\n\nIMPRESSION:\n{_impression(plan, truth, rng)}")


def _impression_only(plan: MentionPlan, truth: StudyTruth, rng) -> str:
    lines = _finding_lines(plan, truth, rng)
    if not any(m in POSITIVE_MENTIONS for m in plan.mentions.values()):
        lines.append(finish(pick(rng, P.NORMAL_IMPRESSION)))
    lines += negation_sentences(plan, rng)
    if len(lines) == 1:
        return f"IMPRESSION: {lines[0]}"
    return "IMPRESSION:\n" + "\n".join(f"{i}. {s}" for i, s in enumerate(lines, 1))


def _comparison(plan: MentionPlan, truth: StudyTruth, rng) -> str:
    lead = pick(rng, ("Compared to the prior study of {d}", "Compared with {d}",
                      "In comparison with the radiograph from {d}")).format(d=_when(truth.prior))
    findings = _finding_lines(plan, truth, rng)
    changed = any(m not in (Mention.STABLE, Mention.NEGATED) for m in plan.mentions.values())
    summary = ("there has been interval change." if changed
               else "there is no significant interval change.")
    body = " ".join([f"{lead}, {summary}"] + findings + _lungs_line(plan, rng)
                    + negation_sentences(plan, rng))
    return (f"COMPARISON: {_when(truth.prior)}.\n\nFINDINGS:\n{body}\n\n"
            f"IMPRESSION:\n{_impression(plan, truth, rng)}")


COMPOSERS = {ReportStyle.ICU_TERSE: _icu_terse,
             ReportStyle.FINDINGS_IMPRESSION: _findings_impression,
             ReportStyle.IMPRESSION_ONLY: _impression_only,
             ReportStyle.COMPARISON: _comparison}


def add_typo(text: str, rng: np.random.Generator) -> str:
    """One dictation slip: a known misspelling if a word allows, else two swapped letters."""
    known = [word for word in P.TYPOS if word in text]
    if known:
        word = pick(rng, known)
        return text.replace(word, P.TYPOS[word], 1)
    words = [w for w in text.split(" ") if len(w) >= 6 and w.isalpha()]
    if not words:
        return text
    word = pick(rng, words)
    i = int(rng.integers(1, len(word) - 2))
    return text.replace(word, word[:i] + word[i + 1] + word[i] + word[i + 2:], 1)


def write_report(truth: StudyTruth, rng: np.random.Generator) -> Report:
    """The report a radiologist would have dictated for `truth`, imperfections included."""
    style = choose_style(truth, rng)
    plan = plan_mentions(truth, NEGATION_RATES[style], rng)
    text = COMPOSERS[style](plan, truth, rng)
    if rng.random() < TYPO_RATE:
        text = add_typo(text, rng)
    mentions = {str(label): str(m) for label, m in sorted(plan.mentions.items())}
    return Report(text, style, mentions)
