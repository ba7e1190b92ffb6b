"""PACS imports: the request, and each study's outcome recorded as the import runs."""

from __future__ import annotations

import uuid

from services.gateway.repo.conn import Conn, Row


async def insert(conn: Conn, import_id: str, requested_by: str, dicomweb_url: str, request_json: str) -> None:
    await conn.execute("INSERT INTO pacs_imports (import_id, requested_by, dicomweb_url, request)"
                       " VALUES (%s,%s,%s,%s)", (import_id, requested_by, dicomweb_url, request_json))


async def get(conn: Conn, import_id: uuid.UUID) -> Row | None:
    return await (await conn.execute("SELECT * FROM pacs_imports WHERE import_id = %s", (import_id,))).fetchone()


async def set_found(conn: Conn, import_id: str, found: int) -> None:
    """How many studies the PACS search found."""
    await conn.execute("UPDATE pacs_imports SET found = %s WHERE import_id = %s", (found, import_id))


async def add_result(conn: Conn, import_id: str, result_json: str, counts_json: str) -> None:
    """Append one study's outcome (`result_json`: a one-element JSON list) and the counts so far."""
    await conn.execute("UPDATE pacs_imports SET results = results || %s::jsonb, counts = %s WHERE import_id = %s",
                       (result_json, counts_json, import_id))


async def fail(conn: Conn, import_id: str, error: str) -> None:
    await conn.execute("UPDATE pacs_imports SET status = 'failed', error = %s, completed_at = now()"
                       " WHERE import_id = %s", (error, import_id))


async def interrupt(conn: Conn, import_id: str) -> None:
    """The gateway stopped mid-import; asking again resumes it."""
    await conn.execute("UPDATE pacs_imports SET status = 'interrupted', completed_at = now() WHERE import_id = %s",
                       (import_id,))


async def finish(conn: Conn, import_id: str, found: int, counts_json: str, results_json: str) -> None:
    """The import ran to its end: the final counts and every study's outcome."""
    await conn.execute("UPDATE pacs_imports SET status = 'done', found = %s, counts = %s, results = %s,"
                       " completed_at = now() WHERE import_id = %s", (found, counts_json, results_json, import_id))
