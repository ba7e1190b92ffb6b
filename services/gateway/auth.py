"""Bearer-token authentication and role checks.

Tokens are 32 random bytes, so a plain sha256 is a safe stored form (no password stretching is
needed for high-entropy secrets) and lets the lookup be one indexed query. Every reviewer request
needs that lookup, so a verified token is remembered in-process for a few seconds: the hot path
(next, vote, image) then costs no extra round trip, and a revoked token stops working within
`TOKEN_TTL_SECONDS` (at once in the process that revoked it). A token is never remembered past
its own expiry. With 200 readers the lookup still runs ~40 times a second, so it is one round trip.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel

from services.common.bodylimit import problem
from services.gateway.problems import Problem
from services.gateway.repo import users

TOKEN_TTL_SECONDS = 5.0
_MAX_CACHED = 10_000


class Role(StrEnum):
    REVIEWER = "reviewer"
    CURATOR = "curator"
    ADMIN = "admin"
    EVALUATOR = "evaluator"


class User(BaseModel):
    user_id: str
    display_name: str
    role: Role


class TokenCache:
    """sha256(token) → (user, expiry). Only valid tokens are cached, so a guessed token always
    reaches the database and a cache miss never grants anything."""

    def __init__(self, ttl: float = TOKEN_TTL_SECONDS) -> None:
        self.ttl = ttl
        self._items: dict[str, tuple[User, float]] = {}

    def get(self, digest: str) -> User | None:
        hit = self._items.get(digest)
        if hit is None or hit[1] < time.monotonic():
            self._items.pop(digest, None)
            return None
        return hit[0]

    def put(self, digest: str, user: User, seconds_left: float | None = None) -> None:
        """Remember a verified token for `ttl` seconds, or less if it expires sooner (`seconds_left`)."""
        if len(self._items) >= _MAX_CACHED:
            self._items.clear()
        ttl = self.ttl if seconds_left is None else min(self.ttl, seconds_left)
        self._items[digest] = (user, time.monotonic() + ttl)

    def forget_user(self, user_id: str) -> None:
        for digest in [d for d, (u, _) in self._items.items() if u.user_id == user_id]:
            del self._items[digest]


token_cache = TokenCache()


def new_token() -> str:
    return "rc_" + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# Declared in the OpenAPI document (components.securitySchemes.bearer, and `security` on every
# operation that depends on it) so Swagger UI at /docs offers "Authorize". auto_error=False: a
# missing token is answered by our own problem+json 401, not FastAPI's plain 403.
bearer_scheme = HTTPBearer(scheme_name="bearer", auto_error=False, bearerFormat="opaque (rc_…)",
                           description="A user's token, as issued by POST /api/v1/users (the admin's "
                                       "from the local stack's state) — `Authorization: Bearer <token>`.")


# Where AuthenticateFirst leaves the user it authenticated, so a route does not check the token again.
USER_SCOPE_KEY = "radcurate.user"


async def current_user(request: Request,
                       _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)]) -> User:
    return await user_of(request.scope)


async def user_of(scope: dict) -> User:
    """The request's user: as AuthenticateFirst found it, else from its Authorization header."""
    user = scope.get(USER_SCOPE_KEY)
    if user is not None:
        return user  # type: ignore[no-any-return]
    header = next((v for k, v in scope.get("headers") or () if k == b"authorization"), b"")
    return await authenticate(header.decode("latin-1"), scope["app"].state)


async def authenticate(header: str, app_state: Any) -> User:
    """The user an `Authorization: Bearer <token>` header names; Problem(401) otherwise. A request
    without a well-formed header is answered before the database is touched."""
    digest = bearer_digest(header)
    user = token_cache.get(digest)
    if user is not None:
        return user
    async with app_state.resources.pool.connection() as conn:
        row = await users.by_token(conn, digest)
    return remember(digest, row)


def bearer_digest(header: str) -> str:
    """sha256 of the token an `Authorization: Bearer <token>` header carries; Problem(401) for a
    header that carries none."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Problem(401, "a bearer token is required (Authorization: Bearer <token>)")
    return token_hash(token)


def remember(digest: str, row: dict[str, Any] | None) -> User:
    """The user of a token looked up by its digest (`row`: users.by_token's columns, or None when no
    active user has that unexpired token: Problem(401)), remembered in the token cache."""
    if row is None:
        raise Problem(401, UNKNOWN_TOKEN)
    seconds_left = row.pop("seconds_left")
    user = User(**row)
    token_cache.put(digest, user, seconds_left)
    return user


UNKNOWN_TOKEN = "the token is not valid (unknown, revoked or expired)"


class AuthenticateFirst:
    """ASGI middleware: an API request's token is checked before its body is read.

    FastAPI parses a request's body (JSON, multipart uploads) before the route's dependencies
    run, so without this a caller with no token could make the gateway read a large body. Role
    checks stay with the routes; this only turns away requests without a valid token."""

    def __init__(self, app: Any, prefix: str = "/api/") -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            given = [v for k, v in scope.get("headers") or () if k == b"authorization"]
            header = given[-1].decode("latin-1") if given else ""
            try:
                user = await authenticate(header, scope["app"].state)
            except Problem as exc:
                await problem(send, exc.status, exc.detail, scope["path"])
                return
            if len(given) == 1:  # the routes read the first of several headers: they check that one
                scope[USER_SCOPE_KEY] = user
        await self.app(scope, receive, send)


def check_role(user: User, roles: tuple[Role, ...]) -> User:
    """The user if it has one of `roles`; Problem(403) otherwise."""
    if user.role not in roles:
        raise Problem(403, f"this needs the role {' or '.join(roles)}; you are {user.role}")
    return user


def require(*roles: Role):
    async def check(user: Annotated[User, Depends(current_user)]) -> User:
        return check_role(user, roles)

    return check


CurrentUser = Annotated[User, Depends(current_user)]
Reviewer = Annotated[User, Depends(require(Role.REVIEWER))]
Curator = Annotated[User, Depends(require(Role.CURATOR, Role.ADMIN))]
Admin = Annotated[User, Depends(require(Role.ADMIN))]
