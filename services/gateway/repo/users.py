"""Users, their roles, teams and token digests."""

from __future__ import annotations

from datetime import datetime

from services.gateway.repo.conn import Conn, Row, autocommit


async def create(conn: Conn, user_id: str, display_name: str, role: str, token_sha256: str,
                 lifetime_seconds: float, team: str | None) -> datetime:
    """Insert an active user with a token valid for `lifetime_seconds`; returns its expiry.
    Raises UniqueViolation when the user id is taken."""
    cur = await conn.execute(
        "INSERT INTO users (user_id, display_name, role, token_sha256, token_expires_at, team)"
        " VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s), %s) RETURNING token_expires_at",
        (user_id, display_name, role, token_sha256, lifetime_seconds, team))
    row = await cur.fetchone()
    assert row is not None  # INSERT ... RETURNING without ON CONFLICT always returns its row
    expires: datetime = row["token_expires_at"]
    return expires


async def replace_token(conn: Conn, user_id: str, token_sha256: str, lifetime_seconds: float) -> datetime | None:
    """Give an active user a new token digest and lifetime; its expiry, or None if no such user."""
    cur = await conn.execute(
        "UPDATE users SET token_sha256 = %s, token_expires_at = now() + make_interval(secs => %s)"
        " WHERE user_id = %s AND active RETURNING token_expires_at",
        (token_sha256, lifetime_seconds, user_id))
    row = await cur.fetchone()
    expires: datetime | None = None if row is None else row["token_expires_at"]
    return expires


async def active(conn: Conn, role: str | None) -> list[Row]:
    """Active users (user_id, display_name, role), of one role if given, by user id."""
    cur = await conn.execute(
        "SELECT user_id, display_name, role FROM users WHERE active AND (%s::text IS NULL OR role = %s)"
        " ORDER BY user_id", (role, role))
    return await cur.fetchall()


async def active_role(conn: Conn, user_id: str) -> str | None:
    """An active user's role; None when there is no such active user."""
    cur = await conn.execute("SELECT role FROM users WHERE user_id = %s AND active", (user_id,))
    row = await cur.fetchone()
    return None if row is None else str(row["role"])


async def deactivate(conn: Conn, user_id: str) -> None:
    await conn.execute("UPDATE users SET active = false WHERE user_id = %s", (user_id,))


async def by_token(conn: Conn, token_sha256: str) -> Row | None:
    """The active user (user_id, display_name, role) whose unexpired token has this digest, with
    `seconds_left` before the token expires (None: it does not). One round trip: every reader's
    token is looked up again every few seconds (auth.TOKEN_TTL_SECONDS)."""
    async with autocommit(conn):
        cur = await conn.execute(
            "SELECT user_id, display_name, role, extract(epoch FROM token_expires_at - now())::float8 AS seconds_left"
            " FROM users WHERE token_sha256 = %s AND active"
            " AND (token_expires_at IS NULL OR token_expires_at > now())", (token_sha256,))
        return await cur.fetchone()


async def is_active_in_role(conn: Conn, user_id: str, role: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM users WHERE user_id = %s AND active AND role = %s", (user_id, role))
    return await cur.fetchone() is not None


async def active_ids(conn: Conn, role: str) -> list[str]:
    """The user ids of a role's active users, sorted."""
    cur = await conn.execute("SELECT user_id FROM users WHERE active AND role = %s ORDER BY user_id", (role,))
    return [r["user_id"] for r in await cur.fetchall()]


async def team(conn: Conn, user_id: str) -> str | None:
    """The user's team; None for a user without one (or no such user)."""
    cur = await conn.execute("SELECT team FROM users WHERE user_id = %s", (user_id,))
    row = await cur.fetchone()
    return (row and row["team"]) or None


async def bootstrap_admin(conn: Conn, role: str, token_sha256: str) -> None:
    """Create the `admin` user, or give it this token digest."""
    await conn.execute(
        "INSERT INTO users (user_id, display_name, role, token_sha256) VALUES ('admin', 'Administrator', %s, %s)"
        # A restart may rotate the token, never re-activate an admin an operator switched off.
        " ON CONFLICT (user_id) DO UPDATE SET token_sha256 = EXCLUDED.token_sha256",
        (role, token_sha256))
