"""A reader's `GET /reviews/next` whose token is not in the gateway's token cache (its first request,
and again each time the cache has let the token go) looks the token up and opens the next
assignment in one statement (repo/reviews.py `look_up_and_open_next`): one round trip and one pool
checkout where the lookup and the statement took two each. On the gateway's real tables in the
test Postgres, through the real app's HotPath: the answers and refusals stay what they were (401
problem+json as AuthenticateFirst sends it, 403 for another role, 204 when nothing is left), and
only a valid reviewer's assignment is ever opened."""

from __future__ import annotations

import os
import uuid

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row
from pydantic import SecretStr

from services.common.db import open_pool
from services.common.runtime import Resources
from services.gateway.app import GatewaySettings, build_app
from services.gateway.auth import token_cache, token_hash
from services.gateway.repo import reviews
from tests.integration.test_gateway_round_trips import _as_the_pool_gave_it, round_trips

pytestmark = pytest.mark.integration
COLUMNS = "a.assignment_id, a.study_id, a.opened_at, s.report_text"


@pytest.fixture
def tokens(gateway_dsn) -> dict[str, str]:
    """A reviewer r1 with open reads A (oldest) and B; a curator c1 with an open read C (as if one
    were left from a role change); r2 inactive and r3 expired, each with an open read. Returns
    each user's token (fresh, so no other test's cache entry answers for it)."""
    tokens = {u: f"rc_{u}_{uuid.uuid4().hex}" for u in ("r1", "c1", "r2", "r3")}
    with psycopg.connect(gateway_dsn) as conn:
        for user, role, active, expires in (("r1", "reviewer", True, "1 hour"), ("c1", "curator", True, "1 hour"),
                                            ("r2", "reviewer", False, "1 hour"), ("r3", "reviewer", True, "-1 second")):
            conn.execute("INSERT INTO users (user_id, display_name, role, token_sha256, active, token_expires_at)"
                         " VALUES (%s, %s, %s, %s, %s, now() + %s::interval)",
                         (user, user.upper(), role, token_hash(tokens[user]), active, expires))
        for i, (name, reader) in enumerate((("A", "r1"), ("B", "r1"), ("C", "c1"), ("D", "r2"), ("E", "r3"))):
            conn.execute("INSERT INTO studies (study_id, patient_id, protocol, study_instance_uid, report_text,"
                         " correlation_id) VALUES (%s, 'P', 'cxr-label-verification', %s, 'report', 'c')",
                         (f"S-{name}", f"1.2.{i}"))
            conn.execute("INSERT INTO assignments (assignment_id, study_id, reader_id, run_id, difficulty, suggested,"
                         " unmapped, assigned_at) VALUES (%s, %s, %s, 'run', 'easy', '[]', '[]',"
                         " now() - make_interval(mins => 10 - %s))", (name, f"S-{name}", reader, i))
    return tokens


def opened(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute(
            "SELECT assignment_id FROM assignments WHERE opened_at IS NOT NULL ORDER BY assignment_id")]


async def test_the_lookup_and_the_next_read_are_one_round_trip_and_only_a_reviewer_opens(gateway_dsn, tokens,
                                                                                      tmp_path):
    conn = await psycopg.AsyncConnection.connect(gateway_dsn, row_factory=dict_row, autocommit=False)
    try:
        trace = tmp_path / "next.trace"
        fd = os.open(trace, os.O_WRONLY | os.O_CREAT)
        conn.pgconn.trace(fd)
        try:
            row = await reviews.look_up_and_open_next(conn, token_hash(tokens["r1"]), "reviewer", [], COLUMNS)
        finally:
            conn.pgconn.untrace()
            os.close(fd)
        assert round_trips(trace) == 1, trace.read_text()
        assert _as_the_pool_gave_it(conn)
        assert row is not None
        assert (row["token_user_id"], row["token_display_name"], row["token_role"]) == ("r1", "R1", "reviewer")
        assert 3590 < row["token_seconds_left"] <= 3600
        assert row["assignment_id"] == "A" and row["opened_at"] is not None and row["report_text"] == "report"
        # `after` skips as GET /next's does
        row = await reviews.look_up_and_open_next(conn, token_hash(tokens["r1"]), "reviewer", ["A"], COLUMNS)
        assert row is not None and row["assignment_id"] == "B"
        # Another role: the user, nothing opened.
        row = await reviews.look_up_and_open_next(conn, token_hash(tokens["c1"]), "reviewer", [], COLUMNS)
        assert row is not None and row["token_role"] == "curator" and row["assignment_id"] is None
        # Unknown, inactive, expired: no row, nothing opened.
        for token in ("rc_unknown", tokens["r2"], tokens["r3"]):
            assert await reviews.look_up_and_open_next(conn, token_hash(token), "reviewer", [], COLUMNS) is None
        assert _as_the_pool_gave_it(conn)
    finally:
        await conn.close()
    assert opened(gateway_dsn) == ["A", "B"]


async def test_a_first_next_takes_one_pool_checkout_and_answers_as_before(gateway_dsn, tokens):
    settings = GatewaySettings(database_url=SecretStr(gateway_dsn))
    app = build_app(settings)
    pool = await open_pool(gateway_dsn)
    # No lifespan (no broker or S3 here): the hot path needs only the pool.
    app.state.resources = Resources(settings, pool, None, None, None)  # type: ignore[arg-type]
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")

    async def next_read(user: str, query: str = "") -> tuple[httpx.Response, int]:
        before = pool.get_stats().get("requests_num", 0)
        answer = await client.get(f"/api/v1/reviews/next{query}", headers={"Authorization": f"Bearer {tokens[user]}"})
        return answer, pool.get_stats().get("requests_num", 0) - before

    try:
        for user in tokens:
            token_cache.forget_user(user)
        first, checkouts = await next_read("r1")
        assert first.status_code == 200 and first.json()["assignment_id"] == "A"
        assert checkouts == 1  # the token looked up in the statement that opened A
        again, checkouts = await next_read("r1", "?after=A")  # the token is cached now: the plain statement
        assert again.status_code == 200 and again.json()["assignment_id"] == "B" and checkouts == 1
        assert {k for k in first.json() if first.json()[k] is not None} == {
            k for k in again.json() if again.json()[k] is not None}  # the same view either way

        refused, checkouts = await next_read("c1")
        assert refused.status_code == 403 and refused.headers["content-type"] == "application/problem+json"
        assert "reviewer" in refused.json()["detail"] and checkouts == 1
        for user in ("r2", "r3"):
            refused, _ = await next_read(user)
            assert refused.status_code == 401 and refused.json()["title"] == "Unauthorized"
            assert refused.headers["www-authenticate"] == "Bearer" and refused.headers["connection"] == "close"
        assert opened(gateway_dsn) == ["A", "B"]  # neither the curator's nor the invalid tokens' reads

        token_cache.forget_user("r1")  # as when the cache lets the token go: the one statement again
        done, checkouts = await next_read("r1", "?after=A&after=B")
        assert done.status_code == 204 and checkouts == 1
    finally:
        await client.aclose()
        await pool.close()
