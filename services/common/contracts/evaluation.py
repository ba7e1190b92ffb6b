"""Measuring: the readers' agreement report, and a team's predictions scored against a holdout (consensus)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import model_validator

from services.common.contracts.envelope import Event, ProtocolName, Topic
from services.common.contracts.release import SelectionPlan

# agreement: the agreement / AI-vs-expert report; release-preview: the dataset card a release
# with `plan` would carry if requested now (counts and prevalence only; nothing is written).
ReportKind = Literal["agreement", "release-preview"]


class ReportRequested(Event):
    """Command (curator): compute a report from consensus's tables. `study_id` is the report id."""

    topic: ClassVar[Topic] = Topic.REPORT_REQUESTED
    event_type: Literal["ReportRequested"] = "ReportRequested"
    schema_version: int = 2
    report_id: str
    protocol: ProtocolName
    kind: ReportKind = "agreement"
    plan: SelectionPlan | None = None  # release-preview: the plan to try


class ReportReady(Event):
    """The report asked for: aggregate figures only, never a study's labels."""

    topic: ClassVar[Topic] = Topic.REPORT_READY
    event_type: Literal["ReportReady"] = "ReportReady"
    schema_version: int = 2
    report_id: str
    protocol: ProtocolName
    kind: ReportKind = "agreement"
    report: dict[str, Any]


class EvaluationRequested(Event):
    """Command (evaluator): score a prediction file against a release's holdout.
    `study_id` is the evaluation id. The file lives in the objects bucket under `submission_key`
    (events stay small: a lumbar submission is ~900 kB); `predictions_csv` is only read from
    messages written before the key existed (additive change, no upcaster needed)."""

    topic: ClassVar[Topic] = Topic.EVALUATION_REQUESTED
    event_type: Literal["EvaluationRequested"] = "EvaluationRequested"
    evaluation_id: str
    evaluator_id: str
    release_id: str
    submission_sha256: str
    submission_key: str = ""
    predictions_csv: str = ""

    @model_validator(mode="after")
    def _file_by_key_or_inline(self) -> EvaluationRequested:
        if not (self.submission_key or self.predictions_csv):
            raise ValueError("an evaluation request names its file (submission_key) or carries it")
        return self


class EvaluationCompleted(Event):
    """The outcome of an evaluation: aggregate metrics and a receipt, or why the file was refused."""

    topic: ClassVar[Topic] = Topic.EVALUATION_COMPLETED
    event_type: Literal["EvaluationCompleted"] = "EvaluationCompleted"
    evaluation_id: str
    evaluator_id: str
    release_id: str
    status: Literal["scored", "rejected"]
    result: dict[str, Any] | None = None
    error: str = ""
    receipt: str = ""
    metric_version: str = ""
