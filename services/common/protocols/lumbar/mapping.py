"""Offline lumbar mapper: graded mentions -> one suggested grade per condition x level.

Readers grade all 25 cells of a study, so the suggestion is a full grid, prefilled: a cell the
report never mentions is suggested Normal/Mild (what a silent report means) with low
confidence, so the web page can show which grades the report actually supports. Where a report
grades one cell twice (findings and impression), the higher grade wins: an impression that
repeats a finding rarely downgrades it, and a missed Severe costs four times a missed
Normal/Mild in the competition metric.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from services.common.contracts import Certainty, Finding
from services.common.protocols.lumbar.extract import GradedMention, extract_lumbar_grades
from services.common.protocols.lumbar.grid import CONDITIONS, LEVELS, Condition, Grade, Level, cell_id
from services.common.protocols.lumbar.scoring import split_row_id
from services.common.taxonomy import Taxonomy

STATED_CONFIDENCE = 0.9  # the report grades the cell in so many words
HEDGED_CONFIDENCE = 0.6  # a range, hedge or ungraded mention
SILENT_CONFIDENCE = 0.5  # the report does not mention the cell: Normal/Mild by default
_RANK = {Grade.NORMAL_MILD: 0, Grade.MODERATE: 1, Grade.SEVERE: 2}


@dataclass(frozen=True)
class GradeSuggestion:
    """The suggested grade of one condition at one level, and why."""

    condition: Condition
    level: Level
    grade: Grade
    confidence: float
    uncertain: bool
    mentioned: bool
    evidence: tuple[str, ...] = ()

    @property
    def cell_id(self) -> str:
        return cell_id(self.condition, self.level)

    def to_dict(self) -> dict:
        """JSON-ready (for an event payload or the review page)."""
        return {"cell_id": self.cell_id, "condition": self.condition.value,
                "level": self.level.value, "grade": self.grade.value,
                "confidence": self.confidence, "uncertain": self.uncertain,
                "mentioned": self.mentioned, "evidence": list(self.evidence)}


def suggest_grades(mentions: Iterable[GradedMention]) -> list[GradeSuggestion]:
    """All 25 cells in competition column order (conditions x levels)."""
    by_cell: dict[tuple[Condition, Level], list[GradedMention]] = {}
    for m in mentions:
        by_cell.setdefault((m.condition, m.level), []).append(m)
    return [_suggest(c, lv, by_cell.get((c, lv), [])) for c in CONDITIONS for lv in LEVELS]


def _suggest(condition: Condition, level: Level, mentions: list[GradedMention]) -> GradeSuggestion:
    if not mentions:
        return GradeSuggestion(condition, level, Grade.NORMAL_MILD, SILENT_CONFIDENCE,
                               uncertain=False, mentioned=False)
    grade = max((m.grade for m in mentions), key=_RANK.__getitem__)
    uncertain = all(m.uncertain for m in mentions if m.grade is grade)
    evidence = tuple(dict.fromkeys(m.evidence for m in mentions if m.grade is grade))
    confidence = HEDGED_CONFIDENCE if uncertain else STATED_CONFIDENCE
    return GradeSuggestion(condition, level, grade, confidence, uncertain, True, evidence)


def grade_grid(suggestions: Iterable[GradeSuggestion]) -> dict[str, Grade]:
    """`{cell_id: grade}`, the shape of one `train.csv` row."""
    return {s.cell_id: s.grade for s in suggestions}


# --- from the findings-extracted event ----------------------------------------------------


def mentions_from_findings(findings: Iterable[Finding],
                           taxonomy: Taxonomy) -> tuple[list[GradedMention], list[Finding]]:
    """Graded mentions, and the findings that name no cell.

    The rule extractor names the cell in `label_hint` and the grade first in `text`; other
    extractors (an LLM) may write free text, which is graded with the lumbar rules, first
    from the finding's text, then from its evidence sentence (which usually names the level).
    """
    mentions: list[GradedMention] = []
    unmapped: list[Finding] = []
    for finding in findings:
        found = _hinted(finding) or _from_text(finding, taxonomy)
        mentions += found
        if not found:
            unmapped.append(finding)
    return mentions, unmapped


def map_lumbar_findings(findings: Iterable[Finding],
                        taxonomy: Taxonomy) -> tuple[list[GradeSuggestion], list[Finding]]:
    """The 25-cell suggestion grid and the unmapped findings (shown to readers)."""
    mentions, unmapped = mentions_from_findings(findings, taxonomy)
    return suggest_grades(mentions), unmapped


def _hinted(finding: Finding) -> list[GradedMention]:
    if not finding.label_hint:
        return []
    try:
        _, condition, level = split_row_id(f"hint_{finding.label_hint}")
    except ValueError:
        return []
    grade = next((g for g in Grade if finding.text.startswith(g.value)), None)
    if grade is None:
        return []
    return [GradedMention(condition, level, grade, negated=False,
                          uncertain=finding.certainty == Certainty.UNCERTAIN,
                          evidence=finding.evidence, evidence_start=finding.evidence_start,
                          evidence_end=finding.evidence_end)]


def _from_text(finding: Finding, taxonomy: Taxonomy) -> list[GradedMention]:
    for text in (finding.text, f"{finding.evidence} {finding.text}"):
        found = extract_lumbar_grades(text, taxonomy)
        if found:
            return found
    return []
