"""Users, roles and tokens."""

from __future__ import annotations

from fastapi import APIRouter, status
from psycopg.errors import UniqueViolation
from pydantic import BaseModel, Field

from services.gateway.api.models import RequestBody
from services.gateway.auth import Curator, CurrentUser, Role, User, new_token, token_cache, token_hash
from services.gateway.deps import Res
from services.gateway.problems import Problem
from services.gateway.repo import users as repo

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
            expires = await repo.create(conn, body.user_id, body.display_name, body.role.value, token_hash(token),
                                        _lifetime_days(res) * 86400, body.team)
    except UniqueViolation as exc:
        raise Problem(409, f"user {body.user_id!r} already exists") from exc
    return IssuedToken(user_id=body.user_id, role=body.role, token=token, expires_at=expires.isoformat())


@router.post("/me/token", status_code=status.HTTP_201_CREATED)
async def renew_token(user: CurrentUser, res: Res) -> IssuedToken:
    """Replace the caller's token with a new one (a fresh lifetime); the old one stops working."""
    token = new_token()
    async with res.pool.connection() as conn:
        expires = await repo.replace_token(conn, user.user_id, token_hash(token), _lifetime_days(res) * 86400)
    if expires is None:
        raise Problem(401, "the token is not valid (unknown, revoked or expired)")
    token_cache.forget_user(user.user_id)
    return IssuedToken(user_id=user.user_id, role=user.role, token=token, expires_at=expires.isoformat())


@router.get("/users")
async def list_users(_: Curator, res: Res, role: Role | None = None) -> list[User]:
    """Users, optionally of one role (the panel is `role=reviewer`)."""
    async with res.pool.connection() as conn:
        return [User(**r) for r in await repo.active(conn, role)]


@router.delete("/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def deactivate_user(user_id: str, actor: Curator, res: Res) -> None:
    """Revoke a user's token. Curators manage the panel (reviewers, evaluators); admins anyone."""
    async with res.pool.connection() as conn:
        role = await repo.active_role(conn, user_id)
        if role is None:
            raise Problem(404, f"no active user {user_id!r}")
        if role in (Role.CURATOR, Role.ADMIN) and actor.role != Role.ADMIN:
            raise Problem(403, f"only an admin can deactivate a {role}")
        await repo.deactivate(conn, user_id)
    token_cache.forget_user(user_id)
