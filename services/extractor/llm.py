"""LLM finding extraction (GPT-4o in the REVEAL-CXR procedure) through the shared client layer.

The report is sent as delimited data in the user message; the versioned system prompt
(`prompts/<version>.md`) says it is never to be obeyed. Two guards keep whatever the model
writes tied to the report: the answer must match a JSON schema (one corrective retry, then the
study is dead-lettered), and every finding must quote its evidence sentence from the report —
a finding whose evidence cannot be found there is dropped, so text the report does not contain
(a hallucination, or a leaked prompt) never becomes a finding.
"""

from __future__ import annotations

import logging
import re
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.common import phi
from services.common.contracts import Certainty, Finding, Laterality, ModelProvenance
from services.common.llm import BACKEND, LlmClient, LlmReply

log = logging.getLogger(__name__)

PROMPT_VERSION = "extract-v1"
PROMPTS = Path(__file__).parent / "prompts"
SCHEMA_NAME = "cxr_findings"
_CLOSING_TAG_RE = re.compile(r"</\s*report\s*>", re.IGNORECASE)

FINDINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "findings": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "certainty": {"type": "string", "enum": [c.value for c in Certainty]},
                    "laterality": {"type": "string", "enum": [side.value for side in Laterality]},
                    "evidence": {"type": "string"},
                },
                "required": ["text", "certainty", "laterality", "evidence"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["findings"],
    "additionalProperties": False,
}


class _LlmFinding(BaseModel):
    """One finding as the model must write it (the schema above, checked again here)."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=200)
    certainty: Certainty
    laterality: Laterality
    evidence: str = Field(min_length=1)


class _LlmAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    findings: list[_LlmFinding]


@cache
def system_prompt(version: str = PROMPT_VERSION) -> str:
    return (PROMPTS / f"{version}.md").read_text(encoding="utf-8")


def messages(report: str) -> list[dict[str, str]]:
    """System prompt, then the report as data; a closing marker inside it is defused. A masked
    report stays marked as masked: the tags and the defused marker add no identifier."""
    data = _CLOSING_TAG_RE.sub("</ report-text>", report)
    user = f"<report>\n{data}\n</report>"
    return [
        {"role": "system", "content": system_prompt()},
        {"role": "user", "content": phi.MaskedText(user) if isinstance(report, phi.MaskedText) else user},
    ]


def locate(report: str, evidence: str) -> tuple[int, int] | None:
    """Character span of `evidence` in `report`: exact, else ignoring case and whitespace runs
    (a sentence-ending mark the model left off is taken into the span)."""
    quoted = evidence.strip().strip("\"'")
    start = report.find(quoted)
    if start >= 0:
        return start, start + len(quoted)
    words = quoted.split()
    found = re.search(r"\s+".join(map(re.escape, words)), report, re.IGNORECASE) if words else None
    if found is None:
        return None
    end = found.end()
    return found.start(), end + 1 if report[end:end + 1] in (".", "!", "?") else end


def to_findings(report: str, data: dict[str, Any]) -> list[Finding]:
    """Validated findings with evidence spans; findings not quoted from the report are dropped."""
    answer = _LlmAnswer.model_validate(data)
    findings = []
    for item in answer.findings:
        span = locate(report, item.evidence)
        if span is None:
            log.warning("dropped a finding whose evidence is not in the report: %r", item.text[:80])
            continue
        start, end = span
        findings.append(Finding(
            text=item.text, certainty=item.certainty, laterality=item.laterality,
            evidence=report[start:end], evidence_start=start, evidence_end=end,
        ))
    return findings


class LlmExtractor:
    """Reads findings out of report text with an OpenAI-compatible chat model."""

    def __init__(self, client: LlmClient) -> None:
        self._client = client
        self.provenance = ModelProvenance(backend=BACKEND, model=client.model, prompt_version=PROMPT_VERSION)

    async def extract(self, report: str) -> list[Finding]:
        """The report's findings; cached per (model, prompt version, report text). The report is
        masked first (services.common.phi; a report the handler masked is not masked again), so
        evidence is quoted from, and located in, the text the model saw."""
        report = phi.masked(report)
        asked: list[list[Finding]] = []  # the findings this caller's own call validated, if it made one
        answer = await self._client.cached(PROMPT_VERSION, {"report": report}, lambda: self._ask(report, asked))
        if asked:
            # Already validated from the model's answer: validating their JSON form again was
            # ~10% of the client's CPU per call (bench/bench_llm.py). A cached or shared answer is.
            return asked[0]
        return [Finding.model_validate(item) for item in answer["findings"]]

    async def _ask(self, report: str, asked: list[list[Finding]]) -> dict[str, Any]:
        def validate(data: dict[str, Any], _: LlmReply) -> list[Finding]:
            return to_findings(report, data)

        findings = await self._client.complete_json(
            messages(report), schema_name=SCHEMA_NAME, schema=FINDINGS_SCHEMA, validate=validate,
        )
        asked.append(findings)
        return {"findings": [f.model_dump(mode="json") for f in findings]}
