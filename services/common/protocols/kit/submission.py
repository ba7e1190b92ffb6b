"""What a prediction file for a release must look like, and how it is scored: the facts an
evaluator needs before submitting, declared by each protocol (`CurationProtocol.submission_format`
and `.metric`) so the gateway can describe, exemplify and check files for any protocol."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Metric:
    """How a release of the protocol is scored, as an evaluator reads it."""

    name: str
    higher_is_better: bool
    description: str

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "higher_is_better": self.higher_is_better, "description": self.description}


@dataclass(frozen=True)
class SubmissionFormat:
    """One row per key — a holdout study, or a study × one of `key_suffixes` (`<study_id>_<suffix>`)
    — with one number in [low, high] per value column."""

    key_column: str
    value_columns: tuple[str, ...]
    low: float
    high: float
    key_suffixes: tuple[str, ...] = field(default=())
    values_text: str = "a probability in [0, 1]"

    @property
    def header(self) -> list[str]:
        return [self.key_column, *self.value_columns]

    @property
    def keys_per_study(self) -> int:
        return len(self.key_suffixes) or 1

    def keys(self, study_ids: Collection[str]) -> list[str]:
        if self.key_suffixes:
            return [f"{s}_{suffix}" for s in sorted(study_ids) for suffix in self.key_suffixes]
        return sorted(study_ids)

    def describe(self) -> dict[str, Any]:
        rows = "one per holdout study" if not self.key_suffixes else \
            f"one per holdout study and {self.key_column} suffix ({self.keys_per_study} per study:" \
            f" <study_id>_<suffix>)"
        return {"columns": self.header, "rows": rows, "values": self.values_text,
                "content_types": ["text/csv", "multipart/form-data (field 'predictions', plus 'release_id')"],
                "encoding": "UTF-8"}
