"""findings-extracted → labels-suggested."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg

from services.common import protocols
from services.common.consumer import Handler, OneByOne, PermanentError
from services.common.contracts import FindingsExtracted, LabelsSuggested, Topic
from services.common.protocols import CurationProtocol, Mapper, MappingResult
from services.common.runtime import Resources
from services.mapper import repo

if TYPE_CHECKING:  # app.py imports this module
    from services.mapper.app import MapperSettings


def make_mapper(res: Resources[MapperSettings], protocol: CurationProtocol) -> Mapper:
    """The configured backend for one protocol: the LLM where the protocol's taxonomy suits the
    prompt and the settings ask for it, else the protocol's offline mapper. One LLM client per
    process (`res.extra`)."""
    settings = res.settings
    if settings.backend != "llm" or not protocol.llm_backends:
        return protocol.mapper()
    # Imported only here: the LLM client brings openai (~1 s of CPU at every start), which the
    # default lexicon backend never uses.
    from services.common.llm import LlmClient, PostgresLlmCache, config_from_settings
    from services.mapper.llm import LlmMapper

    if "llm_client" not in res.extra:
        res.extra["llm_client"] = LlmClient(config_from_settings(settings.service_name, settings),
                                            PostgresLlmCache(res.pool))
    return LlmMapper(res.extra["llm_client"], protocol.taxonomy())


def build_handlers(res: Resources[MapperSettings]) -> dict[str, Handler]:
    # Every registered protocol's backend up front: a misconfigured LLM fails at start, not mid-batch.
    mappers: dict[str, Mapper] = {name: make_mapper(res, protocols.get(name)) for name in protocols.names()}

    def protocol_of(name: str) -> CurationProtocol:
        try:
            return protocols.get(name)
        except protocols.UnknownProtocol as exc:  # a dead letter, not a guess
            raise PermanentError(str(exc)) from None

    def mapper_for(name: str) -> Mapper:
        if name not in mappers:
            mappers[name] = make_mapper(res, protocol_of(name))
        return mappers[name]

    async def map_study(event: FindingsExtracted) -> MappingResult:
        """Outside the transaction, concurrently for a whole batch: the slow (LLM) part."""
        return await mapper_for(event.protocol).map(event.findings)

    def suggestion_of(event: FindingsExtracted, result: MappingResult) -> LabelsSuggested:
        return LabelsSuggested(
            study_id=event.study_id, patient_id=event.patient_id, correlation_id=event.correlation_id,
            protocol=event.protocol, taxonomy_version=protocol_of(event.protocol).taxonomy().version,
            labels=result.labels, unmapped_findings=result.unmapped, extraction=event.provenance,
            mapping=mapper_for(event.protocol).provenance, objects_manifest=event.objects_manifest,
        )

    async def on_findings_extracted_many(conn: psycopg.AsyncConnection, events: list[FindingsExtracted],
                                         results: list[MappingResult]) -> list[LabelsSuggested]:
        """Map a batch of studies' findings: one statement for the batch (`repo.save_suggestions`).
        A study twice in one batch goes one study at a time (`OneByOne`): the later mapping wins."""
        suggestions = [suggestion_of(e, r) for e, r in zip(events, results, strict=True)]
        if len({(s.study_id, s.taxonomy_version) for s in suggestions}) < len(suggestions):
            raise OneByOne
        await repo.save_suggestions(conn, [(s, r.reasoning) for s, r in zip(suggestions, results, strict=True)])
        return suggestions

    async def on_findings_extracted(conn: psycopg.AsyncConnection, event: FindingsExtracted,
                                    result: MappingResult) -> list[LabelsSuggested]:
        """Map one study's findings onto the protocol's taxonomy."""
        return await on_findings_extracted_many(conn, [event], [result])

    return {Topic.FINDINGS_EXTRACTED.value: Handler(apply=on_findings_extracted, prepare=map_study,
                                                    apply_many=on_findings_extracted_many)}
