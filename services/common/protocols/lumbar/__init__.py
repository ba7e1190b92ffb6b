"""The lumbar spine MRI grading protocol (RSNA LumbarDISC / RSNA 2024): readers grade stenosis per
condition x disc level (Normal/Mild, Moderate, Severe) and place a point on the image that shows
it; consensus per cell (majority, else median) with averaged points; released in the
competition's file layout; scored with the competition's weighted log loss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

from services.common.contracts import (
    CellConsensus,
    CellGrade,
    Finding,
    LabelsSuggested,
    ModelProvenance,
    SamplingPlan,
    SelectionPlan,
    SuggestedLabel,
)
from services.common.protocols import (
    ComposedRelease,
    CurationProtocol,
    Extractor,
    JudgementRejected,
    Mapper,
    MappingResult,
    ReviewContext,
    SubmissionRejected,
    register,
)
from services.common.protocols.kit.decision import Decision
from services.common.protocols.kit.rule_config import RuleConfig
from services.common.protocols.kit.sampling import SampleResult
from services.common.protocols.kit.submission import Metric, SubmissionFormat
from services.common.protocols.lumbar import scoring
from services.common.protocols.lumbar.adjudication import adjudicate_cells
from services.common.protocols.lumbar.consensus import decide_lumbar, lumbar_agreement_report
from services.common.protocols.lumbar.consensus_rule import RULE_NAME
from services.common.protocols.lumbar.extract import extract_lumbar_findings
from services.common.protocols.lumbar.grid import CELL_IDS
from services.common.protocols.lumbar.judgement import NAME, GradeGrid
from services.common.protocols.lumbar.mapping import map_lumbar_findings
from services.common.protocols.lumbar.release import compose_lumbar_release
from services.common.protocols.lumbar.review import GRADES, check_grades, grid_view
from services.common.protocols.lumbar.sampling import draw_lumbar_sample, grid_candidate
from services.common.taxonomy import Taxonomy, load_taxonomy

RULES_PROVENANCE = ModelProvenance(backend="rules", model="lumbar-grade-rules", prompt_version="lumbar-rules-v1")
GRID_PROVENANCE = ModelProvenance(backend="lexicon", model="lumbar-grade-grid", prompt_version="lumbar-lexicon-v1")
SUBMISSION_COLUMNS = ["row_id", "normal_mild", "moderate", "severe"]
_GRADES = TypeAdapter(list[CellGrade])


class LumbarRulesExtractor(Extractor):
    """Grades per condition x level read from a lumbar MRI report, as findings."""

    provenance = RULES_PROVENANCE

    def __init__(self, taxonomy: Taxonomy) -> None:
        self._taxonomy = taxonomy

    async def extract(self, report: str) -> list[Finding]:
        return extract_lumbar_findings(report, self._taxonomy)


class LumbarGridMapper(Mapper):
    """All 25 condition x level cells, each a suggestion with its grade (silent cells Normal/Mild)."""

    provenance = GRID_PROVENANCE

    def __init__(self, taxonomy: Taxonomy) -> None:
        self._taxonomy = taxonomy

    async def map(self, findings: list[Finding]) -> MappingResult:
        grid, unmapped = map_lumbar_findings(findings, self._taxonomy)
        labels = [SuggestedLabel(label_id=g.cell_id, grade=g.grade.value, confidence=g.confidence,
                                 uncertain=g.uncertain, evidence=list(g.evidence)) for g in grid]
        return MappingResult(labels, unmapped)


class LumbarGrading(CurationProtocol):
    name = NAME
    short_name = "lumbar"
    judgement = GradeGrid
    rules = frozenset({RULE_NAME})
    rule_parameters = frozenset({"adjudication_spread", "use_majority"})
    llm_backends = False  # an offline grader only; an LLM prompt for spine reports is future work

    def taxonomy(self) -> Taxonomy:
        return load_taxonomy("lumbar")

    def extractor(self) -> Extractor:
        return LumbarRulesExtractor(self.taxonomy())

    def mapper(self) -> Mapper:
        return LumbarGridMapper(self.taxonomy())

    def draw_sample(self, pool: Sequence[LabelsSuggested], plan: SamplingPlan) -> SampleResult:
        """Grade strata from the suggested grid, rare cells first."""
        return draw_lumbar_sample([grid_candidate(s) for s in pool], plan)

    def review_view(self, suggested: Sequence[Mapping[str, Any]], study_url: str) -> dict[str, Any]:
        """The grading task: the grid prefilled from the suggestion, and where the series are."""
        grid = grid_view(suggested)  # type: ignore[arg-type]
        return {"label_ids": [c["cell_id"] for c in grid], "grading": grid, "grades": list(GRADES),
                "series_url": f"{study_url}/series"}

    async def read_judgement(self, fields: Mapping[str, Any], context: ReviewContext) -> tuple[GradeGrid, list[dict]]:
        """A full grade grid with points on this study's own instances."""
        if fields.get("grades") is None or fields.get("verdict") is not None:
            raise JudgementRejected("a lumbar read is voted with `grades` (one per cell), not a verdict")
        try:
            grades = _GRADES.validate_python(fields["grades"])
        except ValidationError as exc:
            raise JudgementRejected(f"not a grade grid: {exc.errors()[0]['msg']}") from None
        check_grades(grades, await context.instances())
        return GradeGrid(grades=sorted(grades, key=lambda g: g.cell_id)), []

    def vote_outcome(self, judgement: GradeGrid) -> str:  # type: ignore[override]
        return "graded"

    metric = Metric(
        "RSNA 2024 lumbar weighted log loss", higher_is_better=False,
        description="Sample-weighted log loss per condition group (spinal, foraminal, subarticular; weights"
                    " 1/2/4 by true grade) plus a study-level any-severe-spinal log loss, averaged.")

    def submission_format(self) -> SubmissionFormat:
        return SubmissionFormat(SUBMISSION_COLUMNS[0], tuple(SUBMISSION_COLUMNS[1:]), 0.0, math.inf,
                                key_suffixes=tuple(CELL_IDS),
                                values_text="a non-negative number (each row is normalised to sum 1)")

    def adjudication_labels(self) -> Sequence[str]:
        return CELL_IDS

    def adjudicate(self, accepted: bool, labels: Sequence[str], cells: Sequence[Mapping[str, Any]],
                   decided_cells: Sequence[Mapping[str, Any]] | None,
                   instances: set[tuple[str, int]] | None = None) -> tuple[list[str], list[dict[str, Any]] | None]:
        """The curator grades the disputed cells (grade and point); the rest keep the rule's grades."""
        return adjudicate_cells(accepted, labels, cells, decided_cells, instances)

    def decide(self, study_id: str, votes: Sequence[Mapping[str, Any]], assignment: Mapping[str, Any],
               rule: RuleConfig) -> tuple[Decision, list[CellConsensus]]:
        return decide_lumbar(study_id, votes, assignment["objects"], rule)

    def agreement_report(self, studies: Sequence[Mapping[str, Any]], votes: Sequence[Mapping[str, Any]]) -> dict:
        """Quadratic-weighted kappa per condition, level and cell, and point distances in mm."""
        return lumbar_agreement_report(studies, votes)

    def compose_release(self, release_id: str, rows: Sequence[Mapping[str, Any]], plan: SelectionPlan,
                        funnel: Mapping[str, int], rule: RuleConfig, agreement: Mapping) -> ComposedRelease:
        """The competition layout; holdout truth is `{"<condition>_<level>": grade}` per study."""
        composed = compose_lumbar_release(release_id, self.name, rows, plan, funnel, rule, agreement)
        truth = {s.study_id: s.grades for s in composed.holdout}
        return ComposedRelease(composed.files, composed.released, composed.holdout, truth)

    def score_submission(self, text: str, release: Mapping[str, Any], truth: Mapping[str, object],
                         n_bootstrap: int) -> dict:
        """Submissions use the competition's `row_id,normal_mild,moderate,severe` format."""
        grades = {f"{sid}_{col}": scoring.Grade(g)
                  for sid, cols in truth.items() for col, g in dict(cols).items()}  # type: ignore[call-overload]
        try:
            submission = scoring.parse_submission(text)
            result = scoring.score_lumbar_with_intervals(grades, submission, n_bootstrap=n_bootstrap)
        except scoring.SubmissionError as exc:
            raise SubmissionRejected(str(exc)) from None
        return {"metric_version": scoring.METRIC_VERSION, **result}


PROTOCOL = register(LumbarGrading())
