"""The gateway's read models: suggestions, assignments, decisions and releases, from events."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg

from services.common.consumer import Handler
from services.common.contracts import BenchmarkReleased, ConsensusReached, LabelsSuggested, ReviewAssigned, Topic
from services.common.runtime import Resources

_ASSIGNMENT_NS = uuid.UUID("6f1c2a64-5d5e-4f55-9a53-0c1f3f7e2b10")


def assignment_id(study_id: str, reader_id: str) -> str:
    """Deterministic, so a replayed review-assigned event maps to the same assignment."""
    return str(uuid.uuid5(_ASSIGNMENT_NS, f"{study_id}\x1f{reader_id}"))


def _dump(items: list) -> str:
    return json.dumps([i.model_dump(mode="json") for i in items])


async def on_labels_suggested(conn: psycopg.AsyncConnection, e: LabelsSuggested, _: Any) -> None:
    """Keep the suggestion a reader will see."""
    await conn.execute(
        "INSERT INTO suggestions (study_id, taxonomy_version, labels, unmapped, extraction, mapping)"
        " VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (study_id) DO UPDATE SET labels = EXCLUDED.labels,"
        " unmapped = EXCLUDED.unmapped, taxonomy_version = EXCLUDED.taxonomy_version",
        (e.study_id, e.taxonomy_version, _dump(e.labels), _dump(e.unmapped_findings),
         e.extraction.model_dump_json(), e.mapping.model_dump_json()))


async def on_review_assigned(conn: psycopg.AsyncConnection, e: ReviewAssigned, _: Any) -> None:
    """Put the study on each of its readers' worklists."""
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO assignments (assignment_id, study_id, reader_id, run_id, difficulty, suggested, unmapped)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
            [(assignment_id(e.study_id, r), e.study_id, r, e.run_id, e.difficulty, _dump(e.suggested),
              _dump(e.unmapped_findings)) for r in e.readers])


async def on_consensus_reached(conn: psycopg.AsyncConnection, e: ConsensusReached, _: Any) -> None:
    await conn.execute(
        "INSERT INTO decisions (study_id, accepted, labels, rule, vote_ids) VALUES (%s,%s,%s,%s,%s)"
        " ON CONFLICT (study_id) DO NOTHING",
        (e.study_id, e.accepted, json.dumps(e.labels), e.rule, json.dumps(e.vote_ids)))


async def on_benchmark_released(conn: psycopg.AsyncConnection, e: BenchmarkReleased, _: Any) -> None:
    await conn.execute(
        "INSERT INTO releases (release_id, protocol, status, released_count, holdout_count, manifest_key,"
        " manifest_sha256) VALUES (%s,%s,'released',%s,%s,%s,%s) ON CONFLICT (release_id) DO UPDATE SET"
        " status = 'released', released_count = EXCLUDED.released_count, holdout_count = EXCLUDED.holdout_count,"
        " manifest_key = EXCLUDED.manifest_key, manifest_sha256 = EXCLUDED.manifest_sha256",
        (e.release_id, e.protocol, e.released_count, e.holdout_count, e.manifest_key, e.manifest_sha256))


def build_handlers(res: Resources) -> dict[str, Handler]:
    return {
        Topic.LABELS_SUGGESTED.value: Handler(apply=on_labels_suggested),
        Topic.REVIEW_ASSIGNED.value: Handler(apply=on_review_assigned),
        Topic.CONSENSUS_REACHED.value: Handler(apply=on_consensus_reached),
        Topic.BENCHMARK_RELEASED.value: Handler(apply=on_benchmark_released),
    }
