"""LLM label mapping with a local reasoning model (Phi-4-reasoning behind vLLM).

The model thinks before it answers. vLLM returns that thinking either in a separate
`reasoning_content`/`reasoning` field (reasoning parser on) or as `<think>...</think>` in the
content (parser off); the shared client splits it off in both cases, so only the JSON answer is
parsed and the reasoning is kept for audit in the mapper's `suggestions.reasoning` column.

The taxonomy is the contract: a label id outside it is dropped and logged, never passed on; an
answer with nothing usable gets one corrective retry, then the study is dead-lettered. Evidence
is taken from the cited findings, not from the model's words, so it always quotes the report.
"""

from __future__ import annotations

import json
import logging
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.common.contracts import Certainty, Finding, ModelProvenance, SuggestedLabel
from services.common.llm import BACKEND, LlmClient, LlmReply
from services.common.protocols import MappingResult
from services.common.taxonomy import Taxonomy

log = logging.getLogger(__name__)

PROMPT_VERSION = "map-v1"
PROMPTS = Path(__file__).parent / "prompts"
SCHEMA_NAME = "cxr_labels"


class _LlmLabel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label_id: str
    findings: list[int]
    confidence: float = Field(ge=0, le=1)
    uncertain: bool


class _LlmMapping(BaseModel):
    model_config = ConfigDict(extra="forbid")

    labels: list[_LlmLabel]


def labels_schema(taxonomy: Taxonomy) -> dict[str, Any]:
    """The answer's JSON schema; the enum lets a constraining server refuse unknown ids early."""
    label = {
        "type": "object",
        "properties": {
            "label_id": {"type": "string", "enum": list(taxonomy.label_ids)},
            "findings": {"type": "array", "items": {"type": "integer"}},
            "confidence": {"type": "number"},
            "uncertain": {"type": "boolean"},
        },
        "required": ["label_id", "findings", "confidence", "uncertain"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"labels": {"type": "array", "items": label}},
        "required": ["labels"],
        "additionalProperties": False,
    }


@cache
def system_prompt(taxonomy: Taxonomy, version: str = PROMPT_VERSION) -> str:
    listing = "\n".join(f"- {label.id}: {label.name}. {label.definition}".rstrip() for label in taxonomy.labels)
    return (PROMPTS / f"{version}.md").read_text(encoding="utf-8").replace("{labels}", listing)


def findings_payload(findings: list[Finding]) -> list[dict[str, Any]]:
    """What the model sees of each finding (and what the cache key hashes)."""
    return [
        {"index": i, "text": f.text, "certainty": f.certainty.value, "laterality": f.laterality.value,
         "evidence": f.evidence}
        for i, f in enumerate(findings)
    ]


def messages(findings: list[Finding], taxonomy: Taxonomy) -> list[dict[str, str]]:
    data = json.dumps(findings_payload(findings), ensure_ascii=False, indent=1)
    return [
        {"role": "system", "content": system_prompt(taxonomy)},
        {"role": "user", "content": f"<findings>\n{data}\n</findings>"},
    ]


def to_mapping(findings: list[Finding], taxonomy: Taxonomy, data: dict[str, Any],
               reasoning: str | None) -> MappingResult:
    """Validate an answer: unknown ids are dropped; ValueError when nothing usable is left."""
    answer = _LlmMapping.model_validate(data)
    rejected = [item.label_id for item in answer.labels if item.label_id not in taxonomy]
    kept = [item for item in answer.labels if item.label_id in taxonomy]
    if rejected:
        log.warning("rejected %d label(s) outside taxonomy %s: %s", len(rejected), taxonomy.version, rejected)
        if not kept:
            raise ValueError(f"label ids {rejected} are not in the taxonomy; use only {list(taxonomy.label_ids)}")
    for item in kept:
        bad = [i for i in item.findings if not 0 <= i < len(findings)]
        if bad or not item.findings:
            raise ValueError(f"label {item.label_id!r} must cite finding indexes 0..{len(findings) - 1},"
                             f" got {item.findings}")
    labels = [_merge(label_id, [k for k in kept if k.label_id == label_id], findings)
              for label_id in taxonomy.label_ids if any(k.label_id == label_id for k in kept)]
    cited = {i for item in kept for i in item.findings}
    unmapped = [f for i, f in enumerate(findings) if i not in cited]
    return MappingResult(labels, unmapped, reasoning, rejected)


def _merge(label_id: str, items: list[_LlmLabel], findings: list[Finding]) -> SuggestedLabel:
    """One label from all entries the model gave for it; evidence = the cited findings' sentences."""
    cited = sorted({i for item in items for i in item.findings})
    support = [findings[i] for i in cited]
    return SuggestedLabel(
        label_id=label_id,
        confidence=max(item.confidence for item in items),
        uncertain=all(item.uncertain for item in items) or all(f.certainty is Certainty.UNCERTAIN for f in support),
        evidence=list(dict.fromkeys(f.evidence for f in support if f.evidence)),
    )


class LlmMapper:
    """Maps a study's findings onto the taxonomy with a reasoning model behind vLLM."""

    def __init__(self, client: LlmClient, taxonomy: Taxonomy) -> None:
        self._client = client
        self._taxonomy = taxonomy
        self.provenance = ModelProvenance(backend=BACKEND, model=client.model, prompt_version=PROMPT_VERSION)

    async def map(self, findings: list[Finding]) -> MappingResult:
        """Suggested labels for the findings; no findings means no call (and no labels)."""
        if not findings:
            return MappingResult([], [])
        payload = {"taxonomy": self._taxonomy.version, "findings": findings_payload(findings)}
        cached = await self._client.cached(PROMPT_VERSION, payload, lambda: self._ask(findings))
        return MappingResult(
            labels=[SuggestedLabel.model_validate(x) for x in cached["labels"]],
            unmapped=[Finding.model_validate(x) for x in cached["unmapped"]],
            reasoning=cached.get("reasoning"),
            rejected=cached.get("rejected", []),
        )

    async def _ask(self, findings: list[Finding]) -> dict[str, Any]:
        def validate(data: dict[str, Any], reply: LlmReply) -> MappingResult:
            return to_mapping(findings, self._taxonomy, data, reply.reasoning)

        result = await self._client.complete_json(
            messages(findings, self._taxonomy), schema_name=SCHEMA_NAME,
            schema=labels_schema(self._taxonomy), validate=validate,
        )
        return {
            "labels": [label.model_dump(mode="json") for label in result.labels],
            "unmapped": [f.model_dump(mode="json") for f in result.unmapped],
            "reasoning": result.reasoning,
            "rejected": result.rejected,
        }
