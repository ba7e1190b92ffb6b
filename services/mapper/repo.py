"""The mapper's tables."""

from __future__ import annotations

import json

import psycopg

from services.common.contracts import LabelsSuggested


async def save_suggestion(conn: psycopg.AsyncConnection, s: LabelsSuggested, reasoning: str | None = None) -> None:
    await conn.execute(
        "INSERT INTO suggestions (study_id, taxonomy_version, protocol, labels, unmapped, extraction, mapping,"
        " reasoning) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (study_id, taxonomy_version) DO UPDATE SET labels = EXCLUDED.labels,"
        " unmapped = EXCLUDED.unmapped, extraction = EXCLUDED.extraction, mapping = EXCLUDED.mapping,"
        " reasoning = EXCLUDED.reasoning, suggested_at = now()",
        (s.study_id, s.taxonomy_version, s.protocol,
         json.dumps([x.model_dump(mode="json") for x in s.labels]),
         json.dumps([x.model_dump(mode="json") for x in s.unmapped_findings]),
         s.extraction.model_dump_json(), s.mapping.model_dump_json(), reasoning),
    )
