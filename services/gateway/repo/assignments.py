"""Reads on readers' worklists (the `assignments` read model, from review-assigned and
review-reoffered) and the moves a curator asks for."""

from __future__ import annotations

import json
from collections.abc import Sequence

from services.gateway.repo.conn import Conn, Row

# A read's columns copied to the new reader when it is re-offered.
Carried = Row


async def live_read(conn: Conn, study_id: str, reader_id: str) -> Row | None:
    """The reader's open or voted read of the study (assignment_id, study_id, status, difficulty,
    suggested, unmapped, opened_at), unless a release holds the study out."""
    cur = await conn.execute(
        "SELECT assignment_id, study_id, status, difficulty, suggested, unmapped, opened_at FROM assignments"
        " WHERE study_id = %s AND reader_id = %s AND status <> 'expired'"
        " AND NOT EXISTS (SELECT 1 FROM holdout_studies h WHERE h.study_id = assignments.study_id)",
        (study_id, reader_id))
    return await cur.fetchone()


async def add(conn: Conn, rows: Sequence[tuple[str, str, str, str, str, str, str, str, str]]) -> None:
    """Put reads on worklists: (assignment_id, study_id, reader_id, run_id, difficulty, suggested
    JSON, unmapped JSON, reason, protocol) each; a read already there is left as it is."""
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO assignments (assignment_id, study_id, reader_id, run_id, difficulty, suggested, unmapped,"
            " reason, protocol) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING", rows)


async def expire_open(conn: Conn, study_id: str, from_reader: str, to_reader: str) -> Carried | None:
    """End the reader's open read, marking who replaces them; the read's run_id, difficulty,
    suggested, unmapped, reason and protocol, or None when the read is not open any more."""
    cur = await conn.execute(
        "UPDATE assignments SET status = 'expired', expired_at = now(), replaced_by = %s"
        " WHERE study_id = %s AND reader_id = %s AND status = 'open'"
        " RETURNING run_id, difficulty, suggested, unmapped, reason, protocol", (to_reader, study_id, from_reader))
    return await cur.fetchone()


async def add_moved(conn: Conn, assignment_id: str, study_id: str, reader_id: str, old: Carried, reason: str) -> None:
    """The new reader's read, carrying the old read's run, difficulty, suggestion and protocol."""
    await conn.execute(
        "INSERT INTO assignments (assignment_id, study_id, reader_id, run_id, difficulty, suggested, unmapped, reason,"
        " protocol) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
        (assignment_id, study_id, reader_id, old["run_id"], old["difficulty"],
         json.dumps(old["suggested"]), json.dumps(old["unmapped"]), reason, old["protocol"]))


async def lock(conn: Conn, assignment_id: str) -> Row | None:
    """The read (study_id, reader_id, status), locked for the rest of the transaction."""
    cur = await conn.execute("SELECT study_id, reader_id, status FROM assignments WHERE assignment_id = %s"
                             " FOR UPDATE", (assignment_id,))
    return await cur.fetchone()


async def has_had(conn: Conn, study_id: str, reader_id: str) -> bool:
    """Whether the reader has ever had the study (in any state)."""
    cur = await conn.execute("SELECT 1 FROM assignments WHERE study_id = %s AND reader_id = %s", (study_id, reader_id))
    return await cur.fetchone() is not None


async def still_to_read(conn: Conn, study_id: str) -> bool:
    """Whether a reader may still open the study: one of its reads is open, or none is committed
    yet (the review-assigned transaction that queued its images may not have committed)."""
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM assignments WHERE study_id = %s AND status = 'open')"
        " OR NOT EXISTS (SELECT 1 FROM assignments WHERE study_id = %s) AS still", (study_id, study_id))
    row = await cur.fetchone()
    return bool(row and row["still"])
