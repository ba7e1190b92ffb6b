"""findings-extracted → labels-suggested."""

from __future__ import annotations

from typing import Protocol

import psycopg

from services.common.consumer import Handler
from services.common.contracts import (
    Finding,
    FindingsExtracted,
    LabelsSuggested,
    ModelProvenance,
    Protocol as CurationProtocol,
    SuggestedLabel,
    Topic,
)
from services.common.llm import LlmClient, PostgresLlmCache, config_from_settings
from services.common.runtime import Resources
from services.common.taxonomy import Taxonomy, load_taxonomy
from services.mapper import repo
from services.common.protocols.cxr.lexicon import map_findings
from services.mapper.llm import LlmMapper, MappingResult
from services.common.protocols.lumbar.mapping import map_lumbar_findings

LEXICON_PROVENANCE = ModelProvenance(backend="lexicon", model="taxonomy-lexicon", prompt_version="cxr-lexicon-v1")
LUMBAR_PROVENANCE = ModelProvenance(backend="lexicon", model="lumbar-grade-grid", prompt_version="lumbar-lexicon-v1")


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


class LumbarGridMapper:
    """All 25 condition x level cells, each a suggestion with its grade (silent cells Normal/Mild)."""

    provenance = LUMBAR_PROVENANCE

    def __init__(self, taxonomy: Taxonomy) -> None:
        self._taxonomy = taxonomy

    async def map(self, findings: list[Finding]) -> MappingResult:
        grid, unmapped = map_lumbar_findings(findings, self._taxonomy)
        labels = [SuggestedLabel(label_id=g.cell_id, grade=g.grade.value, confidence=g.confidence,
                                 uncertain=g.uncertain, evidence=list(g.evidence)) for g in grid]
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
    taxonomies = {CurationProtocol.CXR: load_taxonomy("cxr"), CurationProtocol.LUMBAR: load_taxonomy("lumbar")}
    mappers: dict[CurationProtocol, Mapper] = {
        CurationProtocol.CXR: make_mapper(res, taxonomies[CurationProtocol.CXR]),
        CurationProtocol.LUMBAR: LumbarGridMapper(taxonomies[CurationProtocol.LUMBAR]),
    }

    async def map_study(event: FindingsExtracted) -> MappingResult:
        """Outside the transaction, concurrently for a whole batch: the slow (LLM) part."""
        return await mappers[event.protocol].map(event.findings)

    async def on_findings_extracted(conn: psycopg.AsyncConnection, event: FindingsExtracted,
                                    result: MappingResult) -> list[LabelsSuggested]:
        """Map one study's findings onto the protocol's taxonomy."""
        suggestion = LabelsSuggested(
            study_id=event.study_id, patient_id=event.patient_id, correlation_id=event.correlation_id,
            protocol=event.protocol, taxonomy_version=taxonomies[event.protocol].version, labels=result.labels,
            unmapped_findings=result.unmapped, extraction=event.provenance, mapping=mappers[event.protocol].provenance,
            objects=event.objects,
        )
        await repo.save_suggestion(conn, suggestion, reasoning=result.reasoning)
        return [suggestion]

    return {Topic.FINDINGS_EXTRACTED.value: Handler(apply=on_findings_extracted, prepare=map_study)}
