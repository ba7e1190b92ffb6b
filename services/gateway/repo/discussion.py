"""A study's discussion: every reader's vote beside the thread of posts."""

from __future__ import annotations

from services.gateway import judgements
from services.gateway.repo.conn import Conn, Row


async def votes(conn: Conn, study_id: str) -> list[Row]:
    """The study's votes in casting order: reader_id, comment, cast_at and the judgement's storage
    columns (read them with `judgements.judgement_fields`)."""
    cur = await conn.execute(
        f"SELECT v.reader_id, v.comment, v.cast_at, {judgements.SELECT} FROM votes v"
        " WHERE v.study_id = %s ORDER BY v.cast_at, v.vote_id", (study_id,))
    return await cur.fetchall()


async def posts(conn: Conn, study_id: str) -> list[Row]:
    """The thread (post_id, author_id, author_role, body, posted_at), oldest first."""
    cur = await conn.execute(
        "SELECT post_id, author_id, author_role, body, posted_at FROM discussion_posts"
        " WHERE study_id = %s ORDER BY post_id", (study_id,))
    return await cur.fetchall()


async def add_post(conn: Conn, study_id: str, author_id: str, author_role: str, body: str) -> Row:
    """Append to the thread; the post as stored."""
    cur = await conn.execute(
        "INSERT INTO discussion_posts (study_id, author_id, author_role, body) VALUES (%s,%s,%s,%s)"
        " RETURNING post_id, author_id, author_role, body, posted_at",
        (study_id, author_id, author_role, body))
    row = await cur.fetchone()
    assert row is not None  # INSERT ... RETURNING without ON CONFLICT always returns its row
    return row
