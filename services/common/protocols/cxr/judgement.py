"""What a CXR reader submits: a verdict on the suggested labels, with corrections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from services.common.contracts import Judgement, Verdict

NAME = "cxr-label-verification"


class LabelVerdict(Judgement):
    """*Agree all* / *Agree mostly* / *Disagree*, and the labels the suggestion missed or got wrong."""

    protocol: Literal["cxr-label-verification"] = NAME
    verdict: Verdict
    added_labels: list[str] = Field(default_factory=list)
    removed_labels: list[str] = Field(default_factory=list)
