"""findings-extracted → labels-suggested."""

from __future__ import annotations

from typing import Protocol

import psycopg

from services.common.consumer import Handler, PermanentError
from services.common.contracts import (
    Finding,
    FindingsExtracted,
    LabelsSuggested,
    ModelProvenance,
    Protocol as CurationProtocol,
    Topic,
)
from services.common.llm import LlmClient, PostgresLlmCache, config_from_settings
from services.common.runtime import Resources
from services.common.taxonomy import Taxonomy, load_taxonomy
from services.mapper import repo
from services.mapper.lexicon import map_findings
from services.mapper.llm import LlmMapper, MappingResult

LEXICON_PROVENANCE = ModelProvenance(backend="lexicon", model="taxonomy-lexicon", prompt_version="cxr-lexicon-v1")


class Mapper(Protocol):
    provenance: ModelProvenance

    async def map(self, findings: list[Finding]) -> MappingResult: ...


class LexiconMapper:
    """The offline lexicon mapper behind the same interface as the LLM one."""

    provenance = LEXICON_PROVENANCE

    def __init__(self, taxonomy: Taxonomy) -> None:
        self._taxonomy = taxonomy

    async def map(self, findings: list[Finding]) -> MappingResult:
        labels, unmapped = map_findings(findings, self._taxonomy)
        return MappingResult(labels, unmapped)


def make_mapper(res: Resources, taxonomy: Taxonomy) -> Mapper:
    """The configured backend; the LLM client lives as long as the process (`res.extra`)."""
    settings = res.settings
    if getattr(settings, "backend", "lexicon") != "llm":
        return LexiconMapper(taxonomy)
    client = LlmClient(config_from_settings(settings.service_name, settings), PostgresLlmCache(res.pool))
    res.extra["llm_client"] = client
    return LlmMapper(client, taxonomy)


def build_handlers(res: Resources) -> dict[str, Handler]:
    taxonomy = load_taxonomy("cxr")
    mapper = make_mapper(res, taxonomy)

    async def map_study(event: FindingsExtracted) -> MappingResult:
        """Outside the transaction, concurrently for a whole batch: the slow (LLM) part."""
        if event.protocol is not CurationProtocol.CXR:
            raise PermanentError(f"mapper has no backend for protocol {event.protocol}")
        return await mapper.map(event.findings)

    async def on_findings_extracted(conn: psycopg.AsyncConnection, event: FindingsExtracted,
                                    result: MappingResult) -> list[LabelsSuggested]:
        """Map one study's findings onto the benchmark taxonomy."""
        suggestion = LabelsSuggested(
            study_id=event.study_id, patient_id=event.patient_id, correlation_id=event.correlation_id,
            protocol=event.protocol, taxonomy_version=taxonomy.version, labels=result.labels,
            unmapped_findings=result.unmapped, extraction=event.provenance, mapping=mapper.provenance,
            objects=event.objects,
        )
        await repo.save_suggestion(conn, suggestion, reasoning=result.reasoning)
        return [suggestion]

    return {Topic.FINDINGS_EXTRACTED.value: Handler(apply=on_findings_extracted, prepare=map_study)}
