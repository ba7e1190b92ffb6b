"""Lumbar MRI reports written from the hidden truth, in the phrasing radiologists use.

A report is not the truth: about one abnormal cell in ten is reported a grade off (mostly
lower, as reports often understate), and some Normal/Mild cells are called "mild". What the
report says is returned with the text (`report_grades`), so tests measure the extractor
against the report and the pipeline against the truth separately.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radcurate.synth.lumbar_truth import LumbarStudyTruth
from services.common.protocols.lumbar.competition import level_name
from services.common.protocols.lumbar.grid import LEVELS, Condition, Grade, Group, Level, cell_id

MISREPORT_RATE, CALLED_MILD_RATE = 0.10, 0.15
NOTATIONS = ("{a}-{b}", "{a}-{n}", "{a}/{b}", "{a}/{n}")  # L4-L5, L4-5, L4/L5, L4/5
NAMES = {Group.SPINAL: ("central canal stenosis", "spinal canal stenosis", "canal stenosis"),
         Group.FORAMINAL: ("neural foraminal narrowing", "foraminal stenosis",
                           "neuroforaminal narrowing"),
         Group.SUBARTICULAR: ("subarticular recess narrowing", "lateral recess stenosis",
                              "subarticular stenosis")}
WORDS = {Grade.MODERATE: ("moderate", "moderate", "moderate", "mild to moderate"),
         Grade.SEVERE: ("severe", "severe", "marked", "moderate to severe")}
DISC = ("Diffuse disc bulge.", "Disc bulge and facet arthropathy.", "Broad-based disc protrusion.",
        "Disc desiccation with a small bulge.", "Facet and ligamentum flavum hypertrophy.")
NORMAL = ("No disc herniation. No spinal canal or neural foraminal stenosis.", "Normal.",
          "Unremarkable.", "No significant stenosis.")
_LOWER = {Grade.MODERATE: Grade.NORMAL_MILD, Grade.SEVERE: Grade.MODERATE}
_HIGHER = {Grade.NORMAL_MILD: Grade.MODERATE, Grade.MODERATE: Grade.SEVERE}


@dataclass(frozen=True)
class LumbarReport:
    text: str
    report_grades: dict[str, str]  # what the text says, cell_id -> grade (silence: Normal/Mild)
    style: str


def write_lumbar_report(truth: LumbarStudyTruth, rng: np.random.Generator) -> LumbarReport:
    said = {cell: _as_reported(g, rng) for cell, g in truth.grades.items()}
    notation = NOTATIONS[int(rng.integers(len(NOTATIONS)))]
    lines = ["CLINICAL HISTORY: Low back pain.",
             "TECHNIQUE: Sagittal T1, sagittal T2/STIR and axial T2 images.", "FINDINGS:"]
    lines += [_level_line(level, said, notation, rng) for level in LEVELS]
    lines += ["", "IMPRESSION:", _impression(said, notation, rng)]
    grades = {cell_id(c, lv): g.value for (c, lv), g in said.items()}
    return LumbarReport("\n".join(lines), grades, notation)


def _as_reported(grade: Grade, rng: np.random.Generator) -> Grade:
    if grade is not Grade.NORMAL_MILD and rng.random() < MISREPORT_RATE:
        return _LOWER[grade] if rng.random() < 0.7 else _HIGHER.get(grade, grade)
    return grade


def _level_text(level: Level, notation: str) -> str:
    upper, lower = level_name(level).split("/")
    return notation.format(a=upper, b=lower, n=lower.lstrip("L"))


def _level_line(level: Level, said: dict, notation: str, rng: np.random.Generator) -> str:
    findings = [_group_phrase(g, level, said, rng) for g in Group]
    findings = [f for f in findings if f]
    head = f"{_level_text(level, notation)}: "
    if not findings:
        return head + NORMAL[int(rng.integers(len(NORMAL)))]
    return head + DISC[int(rng.integers(len(DISC)))] + " " + " ".join(findings)


def _group_phrase(group: Group, level: Level, said: dict, rng: np.random.Generator) -> str:
    """One sentence for a group at a level, or "" when the report is silent about it."""
    name = NAMES[group][int(rng.integers(len(NAMES[group])))]
    conditions = [c for c in Condition if c.group is group]
    grades = [said[(c, level)] for c in conditions]
    if all(g is Grade.NORMAL_MILD for g in grades):
        return f"Mild {'bilateral ' if group is not Group.SPINAL else ''}{name}." \
            if rng.random() < CALLED_MILD_RATE else ""
    if group is Group.SPINAL:
        return f"{_word(grades[0], rng).capitalize()} {name}."
    left, right = grades
    if left is right:
        return f"{_word(left, rng).capitalize()} bilateral {name}."
    return f"{_word(left, rng).capitalize()} left and {_word(right, rng)} right {name}."


def _word(grade: Grade, rng: np.random.Generator) -> str:
    if grade is Grade.NORMAL_MILD:
        return "mild"
    words = WORDS[grade]
    return words[int(rng.integers(len(words)))]


def _impression(said: dict, notation: str, rng: np.random.Generator) -> str:
    """The severe and moderate findings again, one numbered line each, else a normal line."""
    items = []
    for (condition, level), grade in said.items():
        if grade is not Grade.NORMAL_MILD:
            name = condition.value.replace("_", " ")
            items.append(f"{_word(grade, rng).capitalize()} {name} at {_level_text(level, notation)}.")
    if not items:
        return "No significant spinal canal or neural foraminal stenosis."
    return "\n".join(f"{i}. {item}" for i, item in enumerate(items, 1))
