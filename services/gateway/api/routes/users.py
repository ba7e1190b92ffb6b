"""Users, roles and tokens."""

from __future__ import annotations

from fastapi import APIRouter, status
from psycopg.errors import UniqueViolation
from pydantic import BaseModel, Field

from services.gateway.api.models import RequestBody
from services.gateway.auth import Curator, CurrentUser, Role, User, new_token, token_cache, token_hash
from services.gateway.deps import Res
from services.gateway.problems import Problem

router = APIRouter(prefix="/api/v1", tags=["users"])


class NewUser(RequestBody):
    user_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    display_name: str = ""
    role: Role
    team: str | None = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$",
                             description="An evaluator's team (required for evaluators): quotas, the lifetime"
                                         " budget and the ladder are the team's.")


class IssuedToken(BaseModel):
    user_id: str
    role: Role
    token: str = Field(description="Shown once; only its hash is stored.")
    expires_at: str | None = Field(None, description="ISO 8601; renew before with POST /api/v1/me/token.")


def _lifetime_days(res: Res) -> float:
    return res.settings.token_lifetime_days


@router.get("/me")
async def me(user: CurrentUser) -> User:
    """Who the token belongs to."""
    return user


@router.post("/users", status_code=status.HTTP_201_CREATED)
async def create_user(body: NewUser, actor: Curator, res: Res) -> IssuedToken:
    """Create a user and issue their token. Curators manage reviewers and evaluators; admins anyone."""
    if body.role in (Role.CURATOR, Role.ADMIN) and actor.role != Role.ADMIN:
        raise Problem(403, f"only an admin can create a {body.role}")
    if body.role == Role.EVALUATOR and body.team is None:
        raise Problem(422, "an evaluator belongs to a team: say which (team); quotas and budgets are the team's")
    if body.role != Role.EVALUATOR and body.team is not None:
        raise Problem(422, "only evaluators belong to a team")
    token = new_token()
    try:
        async with res.pool.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO users (user_id, display_name, role, token_sha256, token_expires_at, team)"
                " VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s), %s) RETURNING token_expires_at",
                (body.user_id, body.display_name, body.role.value, token_hash(token), _lifetime_days(res) * 86400,
                 body.team))
            expires = (await cur.fetchone())["token_expires_at"]
    except UniqueViolation as exc:
        raise Problem(409, f"user {body.user_id!r} already exists") from exc
    return IssuedToken(user_id=body.user_id, role=body.role, token=token, expires_at=expires.isoformat())


@router.post("/me/token", status_code=status.HTTP_201_CREATED)
async def renew_token(user: CurrentUser, res: Res) -> IssuedToken:
    """Replace the caller's token with a new one (a fresh lifetime); the old one stops working."""
    token = new_token()
    async with res.pool.connection() as conn:
        cur = await conn.execute(
            "UPDATE users SET token_sha256 = %s, token_expires_at = now() + make_interval(secs => %s)"
            " WHERE user_id = %s AND active RETURNING token_expires_at",
            (token_hash(token), _lifetime_days(res) * 86400, user.user_id))
        row = await cur.fetchone()
    if row is None:
        raise Problem(401, "the token is not valid (unknown, revoked or expired)")
    token_cache.forget_user(user.user_id)
    return IssuedToken(user_id=user.user_id, role=user.role, token=token, expires_at=row["token_expires_at"].isoformat())


@router.get("/users")
async def list_users(_: Curator, res: Res, role: Role | None = None) -> list[User]:
    """Users, optionally of one role (the panel is `role=reviewer`)."""
    async with res.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT user_id, display_name, role FROM users WHERE active AND (%s::text IS NULL OR role = %s)"
            " ORDER BY user_id", (role, role))
        return [User(**r) for r in await cur.fetchall()]


@router.delete("/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def deactivate_user(user_id: str, actor: Curator, res: Res) -> None:
    """Revoke a user's token. Curators manage the panel (reviewers, evaluators); admins anyone."""
    async with res.pool.connection() as conn:
        cur = await conn.execute("SELECT role FROM users WHERE user_id = %s AND active", (user_id,))
        row = await cur.fetchone()
        if row is None:
            raise Problem(404, f"no active user {user_id!r}")
        if row["role"] in (Role.CURATOR, Role.ADMIN) and actor.role != Role.ADMIN:
            raise Problem(403, f"only an admin can deactivate a {row['role']}")
        await conn.execute("UPDATE users SET active = false WHERE user_id = %s", (user_id,))
    token_cache.forget_user(user_id)
