"""report-ingested → findings-extracted."""

from __future__ import annotations

from typing import Protocol

import psycopg

from services.common.consumer import Handler, PermanentError
from services.common.contracts import (
    Finding,
    FindingsExtracted,
    ModelProvenance,
    Protocol as CurationProtocol,
    ReportIngested,
    Topic,
)
from services.common.llm import LlmClient, PostgresLlmCache, config_from_settings
from services.common.runtime import Resources
from services.common.taxonomy import Taxonomy, load_taxonomy
from services.extractor import repo
from services.extractor.llm import LlmExtractor
from services.common.protocols.lumbar.extract import extract_lumbar_findings
from services.common.protocols.cxr.extract import extract_findings

RULES_PROVENANCE = ModelProvenance(backend="rules", model="negex-rules", prompt_version="cxr-rules-v1")
LUMBAR_RULES_PROVENANCE = ModelProvenance(backend="rules", model="lumbar-grade-rules", prompt_version="lumbar-rules-v1")


class Extractor(Protocol):
    provenance: ModelProvenance

    async def extract(self, report: str) -> list[Finding]: ...


class RulesExtractor:
    """The offline rule-based extractor behind the same interface as the LLM one."""

    provenance = RULES_PROVENANCE

    def __init__(self, taxonomy: Taxonomy) -> None:
        self._taxonomy = taxonomy

    async def extract(self, report: str) -> list[Finding]:
        return extract_findings(report, self._taxonomy)


class LumbarRulesExtractor:
    """Grades per condition x level read from a lumbar MRI report, as findings."""

    provenance = LUMBAR_RULES_PROVENANCE

    def __init__(self, taxonomy: Taxonomy) -> None:
        self._taxonomy = taxonomy

    async def extract(self, report: str) -> list[Finding]:
        return extract_lumbar_findings(report, self._taxonomy)


def make_extractor(res: Resources) -> Extractor:
    """The configured backend; the LLM client lives as long as the process (`res.extra`)."""
    settings = res.settings
    if getattr(settings, "backend", "rules") != "llm":
        return RulesExtractor(load_taxonomy("cxr"))
    client = LlmClient(config_from_settings(settings.service_name, settings), PostgresLlmCache(res.pool))
    res.extra["llm_client"] = client
    return LlmExtractor(client)


def build_handlers(res: Resources) -> dict[str, Handler]:
    # The lumbar protocol has an offline grader only; its LLM prompt is future work (issue 6 note).
    extractors: dict[CurationProtocol, Extractor] = {
        CurationProtocol.CXR: make_extractor(res),
        CurationProtocol.LUMBAR: LumbarRulesExtractor(load_taxonomy("lumbar")),
    }

    async def read_report(event: ReportIngested) -> list[Finding]:
        """Outside the transaction, concurrently for a whole batch: the slow (LLM) part."""
        if not event.report_text.strip():
            raise PermanentError("report text is empty")
        return await extractors[event.protocol].extract(event.report_text)

    async def on_report_ingested(conn: psycopg.AsyncConnection, event: ReportIngested,
                                 findings: list[Finding]) -> list[FindingsExtracted]:
        """Read the abnormal findings out of one report."""
        provenance = extractors[event.protocol].provenance
        await repo.save_findings(conn, event.study_id, event.protocol, findings, provenance)
        return [
            FindingsExtracted(
                study_id=event.study_id, patient_id=event.patient_id, correlation_id=event.correlation_id,
                protocol=event.protocol, findings=findings, provenance=provenance, objects=event.objects,
            )
        ]

    return {Topic.REPORT_INGESTED.value: Handler(apply=on_report_ingested, prepare=read_report)}
