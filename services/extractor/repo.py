"""The extractor's tables."""

from __future__ import annotations

import json

import psycopg

from services.common.contracts import Finding, ModelProvenance


async def save_findings(conn: psycopg.AsyncConnection, study_id: str, protocol: str,
                        findings: list[Finding], provenance: ModelProvenance,
                        phi_masks: list[dict[str, object]] | None = None) -> None:
    """The findings read from one report, with the backend and the identifiers masked before
    the reading (services.common.phi: rule and span, so the masking can be audited)."""
    await conn.execute(
        "INSERT INTO findings (study_id, protocol, findings, provenance, phi_masks) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (study_id) DO UPDATE SET findings = EXCLUDED.findings,"
        " provenance = EXCLUDED.provenance, phi_masks = EXCLUDED.phi_masks, extracted_at = now()",
        (study_id, protocol, json.dumps([f.model_dump(mode="json") for f in findings]),
         provenance.model_dump_json(), json.dumps(phi_masks or [])),
    )
