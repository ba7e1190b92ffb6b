"""The mapper's tables."""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from pydantic import TypeAdapter

from services.common.contracts import Finding, LabelsSuggested, SuggestedLabel

# The labels and the unmapped findings as JSON arrays, each serialised by pydantic in one call:
# the same jsonb values as json.dumps of each item's model_dump, at about a third of the CPU.
_LABELS_JSON = TypeAdapter(list[SuggestedLabel])
_FINDINGS_JSON = TypeAdapter(list[Finding])

# One statement for a whole batch of suggestions (see services/extractor/repo.py: one parse, plan
# and execution instead of one per study; binary text arrays, cast by Postgres). A (study,
# taxonomy version) may occur only once per statement: callers send a batch with repeats one
# suggestion at a time.
_UPSERT = (
    "INSERT INTO suggestions (study_id, taxonomy_version, protocol, labels, unmapped, extraction, mapping,"
    " reasoning) SELECT s, t, p, l::jsonb, u::jsonb, e::jsonb, m::jsonb, r"
    " FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[])"
    " AS x(s, t, p, l, u, e, m, r)"
    " ON CONFLICT (study_id, taxonomy_version) DO UPDATE SET labels = EXCLUDED.labels,"
    " unmapped = EXCLUDED.unmapped, extraction = EXCLUDED.extraction, mapping = EXCLUDED.mapping,"
    " reasoning = EXCLUDED.reasoning, suggested_at = now()"
)


async def save_suggestions(conn: psycopg.AsyncConnection,
                           suggestions: Sequence[tuple[LabelsSuggested, str | None]]) -> None:
    """Each (suggestion, the LLM's reasoning or None), each (study, taxonomy version) once."""
    if not suggestions:
        return
    columns: tuple[list[str | None], ...] = ([], [], [], [], [], [], [], [])
    for s, reasoning in suggestions:
        for column, value in zip(columns, (
                s.study_id, s.taxonomy_version, s.protocol,
                _LABELS_JSON.dump_json(s.labels).decode(), _FINDINGS_JSON.dump_json(s.unmapped_findings).decode(),
                s.extraction.model_dump_json(), s.mapping.model_dump_json(), reasoning), strict=True):
            column.append(value)
    await conn.execute(_UPSERT, columns)

