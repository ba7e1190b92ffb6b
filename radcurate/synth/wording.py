"""Turn one planned mention into a sentence, with consistent sides, sizes and lobes."""

from __future__ import annotations

import zlib

import numpy as np

from radcurate.synth import phrasing as P
from radcurate.synth.cohort import StudyTruth, pick
from radcurate.synth.labels import Label, Side
from radcurate.synth.mentions import Mention, MentionPlan

BILATERAL_FIXES = (("the bilateral base", "both lung bases"), ("bilateral basilar", "bibasilar"),
                   ("bilateral-sided", "bilateral"), ("a small bilateral", "small bilateral"),
                   ("a trace bilateral", "trace bilateral"), ("bilateral apical", "bilateral"))


def finish(sentence: str) -> str:
    """Collapse the gaps left by empty placeholders and capitalise the first letter."""
    text = " ".join(sentence.split()).replace(" ,", ",")
    return text[:1].upper() + text[1:]


def _stable_pick(key: str, options):
    """Same choice for the same patient and label, so a nodule stays in its lobe."""
    return options[zlib.crc32(key.encode()) % len(options)]


def _details(label: Label, plan: MentionPlan, truth: StudyTruth, rng) -> dict:
    """Side, severity, size and site of a finding, fixed once so every sentence agrees."""
    if label not in plan.details:
        side = plan.sides.get(label)
        subtle_words, overt_words = P.SEVERITY.get(label, (("",), ("",)))
        small = label not in plan.overt
        sev = pick(rng, subtle_words if small else overt_words)
        key = f"{truth.patient_id}/{label}"
        plan.details[label] = dict(
            side=side.value if side else "", sev=sev, sevly=P.ADVERB.get(sev, "mildly"),
            lobe=_stable_pick(key, P.LOBES), rib=_stable_pick(key, P.RIBS),
            mm=int(rng.integers(5, 10) if small else rng.integers(10, 31)),
            cm=int(rng.integers(3, 7)))
    return plan.details[label]


def _fill(template: str, label: Label, plan: MentionPlan, truth: StudyTruth, rng) -> str:
    text = template.format(**_details(label, plan, truth, rng))
    for awkward, natural in BILATERAL_FIXES:
        text = text.replace(awkward, natural)
    return text


def _bank(label: Label, side: Side | None) -> tuple[str, ...]:
    banks = P.POSITIVE[label]
    if side is Side.BILATERAL and "bi" in banks:
        return banks["bi"]
    return banks.get("uni") or banks["any"]


def finding_sentence(label: Label, plan: MentionPlan, truth: StudyTruth, rng) -> str:
    """A sentence for a non-device label mentioned positively or as resolved; said once, reused."""
    if label in plan.sentences:
        return plan.sentences[label]
    mention = plan.mentions[label]
    if mention is Mention.UNCERTAIN:
        template = pick(rng, P.UNCERTAIN[label])
    elif mention is Mention.PRESENT:
        template = pick(rng, _bank(label, plan.sides.get(label)))
    else:
        noun = _fill(P.NOUN[label], label, plan, truth, rng)
        bank = P.STABLE if mention is Mention.STABLE else P.RESOLVED
        template = pick(rng, bank).replace("{noun}", noun)
    plan.sentences[label] = finish(_fill(template, label, plan, truth, rng))
    return plan.sentences[label]


def device_sentences(plan: MentionPlan, truth: StudyTruth, rng,
                     summarise: bool = False) -> list[str]:
    """Devices by name; on a follow-up sometimes just 'lines and tubes are unchanged'."""
    mention = plan.mentions.get(Label.SUPPORT_DEVICES)
    if mention is Mention.RESOLVED:
        removed = [d for d in truth.prior.devices if d not in truth.devices][:2]
        return [finish(pick(rng, P.DEVICE_REMOVED).format(name=P.DEVICE_NAME[d])) for d in removed]
    if mention not in (Mention.PRESENT, Mention.STABLE):
        return []
    if mention is Mention.STABLE and summarise:
        return [finish(pick(rng, P.DEVICES_UNCHANGED))]
    side = (truth.laterality.get(Label.PNEUMOTHORAX) or truth.laterality.get(Label.PLEURAL_EFFUSION)
            or Side.RIGHT)
    side = Side.RIGHT if side is Side.BILATERAL else side
    cm = int(rng.integers(3, 7))
    lines = [finish(pick(rng, P.DEVICES[d]).format(side=side.value, cm=cm)) for d in truth.devices]
    if mention is Mention.STABLE:
        lines = [line[:-1] + pick(rng, P.DEVICE_UNCHANGED_SUFFIX) for line in lines]
    return lines


def negation_sentences(plan: MentionPlan, rng: np.random.Generator) -> list[str]:
    """Pertinent negatives, joined the way dictation joins them ("No X, Y, or Z.")."""
    negated = [label for label, m in plan.mentions.items() if m is Mention.NEGATED]
    sentences: list[str] = []
    heart = {Label.CARDIOMEGALY, Label.MEDIASTINAL_HILAR_ABNORMALITY}
    if heart <= set(negated) and rng.random() < 0.6:
        sentences.append(pick(rng, P.CARDIOMEDIASTINAL_NORMAL))
        negated = [label for label in negated if label not in heart]
    nouns: list[str] = []
    for label in negated:
        if label in P.NEGATION_NOUN and (label not in P.NEGATION_SENTENCE or rng.random() < 0.7):
            nouns.append(P.NEGATION_NOUN[label])
        else:
            sentences.append(pick(rng, P.NEGATION_SENTENCE[label]))
    if nouns:
        joined = nouns[0] if len(nouns) == 1 else ", ".join(nouns[:-1]) + f", or {nouns[-1]}"
        if len(nouns) == 2:
            joined = f"{nouns[0]} or {nouns[1]}"
        sentences.insert(0, pick(rng, P.NEGATION_LEADS).format(joined))
    return [finish(s) for s in sentences]
