"""A multi-series study's series and instances."""

from __future__ import annotations

from services.gateway.repo.conn import Conn, Row


async def of_study(conn: Conn, study_id: str) -> list[Row]:
    """Per series: series_instance_uid, series_description, instances (numbers, ascending) and
    pixel_spacing (as text, e.g. "[0.5, 0.5]", or None); in no particular order."""
    cur = await conn.execute(
        "SELECT series_instance_uid, min(series_description) AS series_description,"
        " array_agg(instance_number ORDER BY instance_number) AS instances,"
        " min(pixel_spacing::text) AS pixel_spacing FROM study_objects WHERE study_id = %s"
        " GROUP BY series_instance_uid", (study_id,))
    return await cur.fetchall()


async def instance_key(conn: Conn, study_id: str, series_uid: str, number: int) -> str | None:
    """The object key of one instance, or None when the series has no such instance."""
    cur = await conn.execute(
        "SELECT object_key FROM study_objects WHERE study_id = %s AND series_instance_uid = %s"
        " AND instance_number = %s ORDER BY sop_instance_uid LIMIT 1", (study_id, series_uid, number))
    row = await cur.fetchone()
    return None if row is None else str(row["object_key"])
