"""Reports requested from consensus (report-requested → report-ready)."""

from __future__ import annotations

import json
from typing import Any

from services.gateway.repo.conn import Conn, Row


async def insert_agreement(conn: Conn, report_id: str, protocol: str, requested_by: str,
                           kind: str = "agreement") -> None:
    """A report requested from consensus (`kind`: agreement, or release-preview)."""
    await conn.execute("INSERT INTO reports (report_id, kind, protocol, requested_by) VALUES (%s,%s,%s,%s)",
                       (report_id, kind, protocol, requested_by))


async def get(conn: Conn, report_id: str) -> Row | None:
    return await (await conn.execute("SELECT * FROM reports WHERE report_id = %s", (report_id,))).fetchone()


async def mark_ready(conn: Conn, report_id: str, body: dict[str, Any]) -> None:
    await conn.execute("UPDATE reports SET status = 'ready', body = %s, ready_at = now() WHERE report_id = %s",
                       (json.dumps(body), report_id))
