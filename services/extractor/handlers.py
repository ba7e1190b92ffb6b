"""report-ingested → findings-extracted."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import psycopg

from services.common import phi, protocols
from services.common.consumer import Handler, OneByOne, PermanentError
from services.common.contracts import Finding, FindingsExtracted, ReportIngested, Topic
from services.common.protocols import CurationProtocol, Extractor
from services.common.runtime import Resources
from services.extractor import repo

if TYPE_CHECKING:  # app.py imports this module
    from services.extractor.app import ExtractorSettings


class ReadReport(NamedTuple):
    """What `read_report` hands to the transaction: the findings, and the audit of what was
    masked before any backend read the report (computed with the mask, not again)."""

    findings: list[Finding]
    phi_masks: list[dict[str, object]]


def make_extractor(res: Resources[ExtractorSettings], protocol: CurationProtocol) -> Extractor:
    """The configured backend for one protocol: the LLM where the protocol's reports suit the
    prompt and the settings ask for it, else the protocol's offline extractor. One LLM client per
    process (`res.extra`)."""
    settings = res.settings
    if settings.backend != "llm" or not protocol.llm_backends:
        return protocol.extractor()
    # Imported only here: the LLM client brings openai (~1 s of CPU at every start), which the
    # default rules backend never uses.
    from services.common.llm import LlmClient, PostgresLlmCache, config_from_settings
    from services.extractor.llm import LlmExtractor

    if "llm_client" not in res.extra:
        res.extra["llm_client"] = LlmClient(config_from_settings(settings.service_name, settings),
                                            PostgresLlmCache(res.pool))
    return LlmExtractor(res.extra["llm_client"])


def build_handlers(res: Resources[ExtractorSettings]) -> dict[str, Handler]:
    # Every registered protocol's backend up front: a misconfigured LLM fails at start, not mid-batch.
    extractors: dict[str, Extractor] = {name: make_extractor(res, protocols.get(name)) for name in protocols.names()}

    def extractor_for(name: str) -> Extractor:
        """The protocol's extractor, built on first use; an unknown protocol is a dead letter."""
        if name not in extractors:
            try:
                extractors[name] = make_extractor(res, protocols.get(name))
            except protocols.UnknownProtocol as exc:
                raise PermanentError(str(exc)) from None
        return extractors[name]

    async def read_report(event: ReportIngested) -> ReadReport:
        """Outside the transaction, concurrently for a whole batch: the slow (LLM) part. Every
        backend reads the masked report (identifiers never reach an LLM, nor findings' evidence,
        which flows on to the mapper and the reviewer page); offsets are those of the original.
        The report is masked here once: the findings and the audit of what was masked."""
        if not event.report_text.strip():
            raise PermanentError("report text is empty")
        masked = phi.mask(event.report_text)
        return ReadReport(await extractor_for(event.protocol).extract(masked.masked_text), masked.audit())

    async def on_reports_ingested(conn: psycopg.AsyncConnection, events: list[ReportIngested],
                                  reads: list[ReadReport]) -> list[FindingsExtracted]:
        """Record the findings read out of a batch of reports, and what was masked: one statement
        for the batch (`repo.save_findings`). A study twice in one batch (a re-sent report) goes
        one report at a time (`OneByOne`), so the later reading wins as it always has."""
        if len({e.study_id for e in events}) < len(events):
            raise OneByOne
        rows, emitted = [], []
        for event, (findings, masks) in zip(events, reads, strict=True):
            provenance = extractor_for(event.protocol).provenance
            rows.append(repo.FindingsRow(event.study_id, event.protocol, findings, provenance, masks))
            emitted.append(FindingsExtracted(
                study_id=event.study_id, patient_id=event.patient_id, correlation_id=event.correlation_id,
                protocol=event.protocol, findings=findings, provenance=provenance,
                objects_manifest=event.objects_manifest,
            ))
        await repo.save_findings(conn, rows)
        return emitted

    async def on_report_ingested(conn: psycopg.AsyncConnection, event: ReportIngested,
                                 read: ReadReport) -> list[FindingsExtracted]:
        """Record the findings read out of one report, and what was masked."""
        return await on_reports_ingested(conn, [event], [read])

    return {Topic.REPORT_INGESTED.value: Handler(apply=on_report_ingested, prepare=read_report,
                                                 apply_many=on_reports_ingested)}
