"""Bearer-token authentication and role checks.

Tokens are 32 random bytes, so a plain sha256 is a safe stored form (no password stretching is
needed for high-entropy secrets) and lets the lookup be one indexed query.
"""

from __future__ import annotations

import hashlib
import secrets
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel

from services.gateway.problems import Problem


class Role(StrEnum):
    REVIEWER = "reviewer"
    CURATOR = "curator"
    ADMIN = "admin"
    EVALUATOR = "evaluator"


class User(BaseModel):
    user_id: str
    display_name: str
    role: Role


def new_token() -> str:
    return "rc_" + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def current_user(request: Request) -> User:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Problem(401, "a bearer token is required (Authorization: Bearer <token>)")
    pool = request.app.state.resources.pool
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT user_id, display_name, role FROM users WHERE token_sha256 = %s AND active", (token_hash(token),))
        row = await cur.fetchone()
    if row is None:
        raise Problem(401, "the token is not valid")
    return User(**row)


def require(*roles: Role):
    async def check(user: Annotated[User, Depends(current_user)]) -> User:
        if user.role not in roles:
            raise Problem(403, f"this needs the role {' or '.join(roles)}; you are {user.role}")
        return user

    return check


CurrentUser = Annotated[User, Depends(current_user)]
Reviewer = Annotated[User, Depends(require(Role.REVIEWER))]
Curator = Annotated[User, Depends(require(Role.CURATOR, Role.ADMIN))]
Admin = Annotated[User, Depends(require(Role.ADMIN))]
