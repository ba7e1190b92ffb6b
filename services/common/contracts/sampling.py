"""Sampling: a curator's request to draw a review sample, and the run's outcome (gateway <-> sampler)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.common.contracts.envelope import Event, ProtocolName, Topic


class SamplingPlan(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int = Field(1000, ge=1)
    readers_per_study: int = Field(3, ge=1)
    min_per_label: int = Field(25, ge=0)
    max_label_share: float = Field(0.35, gt=0, le=1)  # cap on the dominant labels
    no_finding_share: float = Field(0.10, ge=0, le=1)
    seed: int = 0
    # A read not voted within this many seconds moves to another reader; None: the sampler's default.
    lease_seconds: float | None = Field(None, gt=0)


class SamplingRequested(Event):
    """Command: draw a review sample from the candidate pool and assign readers."""

    topic: ClassVar[Topic] = Topic.SAMPLING_REQUESTED
    event_type: Literal["SamplingRequested"] = "SamplingRequested"
    schema_version: int = 2
    run_id: str
    protocol: ProtocolName
    plan: SamplingPlan
    panel: list[str]  # reader user ids
    # Wait until the pool holds at least this many studies (the curator's ingest count), so a
    # request racing ahead of the last labels-suggested events does not sample a partial pool.
    min_pool_size: int = 0
    # Per reader: the most studies they may hold in total, and study ids they must not read.
    capacity: dict[str, int] = Field(default_factory=dict)
    exclusions: dict[str, list[str]] = Field(default_factory=dict)


class SamplingCompleted(Event):
    """The outcome of a sampling run, for curators: what was drawn and which quotas the pool could
    not meet. `study_id` is the run id; each study's reason travels on its review-assigned event."""

    topic: ClassVar[Topic] = Topic.SAMPLING_COMPLETED
    event_type: Literal["SamplingCompleted"] = "SamplingCompleted"
    schema_version: int = 2
    run_id: str
    protocol: ProtocolName
    status: Literal["completed", "failed"] = "completed"
    pool_size: int = 0
    n_selected: int = 0
    unmet_quotas: list[str] = Field(default_factory=list)
    tiers: dict[str, int] = Field(default_factory=dict)
    label_counts: dict[str, int] = Field(default_factory=dict)
    seconds: float = 0.0
    error: str = ""
