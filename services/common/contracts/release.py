"""Release: a curator's selection plan, and the benchmark released from accepted studies (consensus)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.common.contracts.envelope import Event, ProtocolName, Topic


class LabelBounds(BaseModel):
    """A curator's per-label override of the plan's minimum and maximum (benchmark studies)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> LabelBounds:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class SelectionPlan(BaseModel):
    """The benchmark a curator asks for. The composition fields were added later with defaults, so
    an older SelectionRequested still parses (and gets today's REVEAL-like composition).

    Defaults and why: REVEAL-CXR prioritised rare and multi-label studies, but a benchmark with no
    normal and no single-label study measures specificity only among abnormal, heavily co-occurring
    studies, and lets a model that recognises one syndrome (heart failure: cardiomegaly, edema,
    effusion) score on three labels at once. So: 10 % normals and 25 % single-label studies (the
    rest multi-label), no label on more than 35 % of the studies, no pair of labels on more than
    15 %. A share of None restores "by priority only" (normals only fill, singles compete)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_size: int = Field(200, ge=2)
    holdout_fraction: float = Field(0.5, gt=0, lt=1)
    min_per_label: int = Field(5, ge=0)
    seed: int = 0
    normal_share: float | None = Field(0.10, ge=0, le=1)
    single_label_share: float | None = Field(0.25, ge=0, le=1)
    max_label_share: float = Field(0.35, gt=0, le=1)  # default cap for every label
    max_pair_share: float = Field(0.15, gt=0, le=1)  # cap on studies carrying any one pair of labels
    label_bounds: dict[str, LabelBounds] = Field(default_factory=dict)  # per-label min / max overrides

    @model_validator(mode="after")
    def _shares_fit(self) -> SelectionPlan:
        if (self.normal_share or 0) + (self.single_label_share or 0) > 1:
            raise ValueError("normal_share + single_label_share must not exceed 1")
        return self


class SelectionRequested(Event):
    """Command: choose the benchmark from accepted studies and release it. `study_id` is the run id."""

    topic: ClassVar[Topic] = Topic.SELECTION_REQUESTED
    event_type: Literal["SelectionRequested"] = "SelectionRequested"
    schema_version: int = 2
    release_id: str
    protocol: ProtocolName
    plan: SelectionPlan
    funnel: dict[str, int] = Field(default_factory=dict)  # upstream counts for the dataset card


class BenchmarkReleased(Event):
    topic: ClassVar[Topic] = Topic.BENCHMARK_RELEASED
    event_type: Literal["BenchmarkReleased"] = "BenchmarkReleased"
    schema_version: int = 2
    release_id: str
    protocol: ProtocolName
    released_count: int
    holdout_count: int
    manifest_key: str
    manifest_sha256: str
