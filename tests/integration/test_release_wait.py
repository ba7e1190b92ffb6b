"""Issue 15 (the release chain's last hop): `GET /api/v1/releases/{id}?wait=S` answers the moment the
release's benchmark-released is recorded (committed), not at the client's next poll — the gateway
listens for the notification `repo.releases.record_released` sends, which Postgres delivers only
at commit. On the gateway's real tables in the test Postgres, through the real app: a wait ends
at the commit (never before it, so the answer is the release as recorded), a wait for a release
that is not recorded ends after S with its status as it is, another release's record does not end
it, an unknown release is 404 at once, and without `wait` the route answers at once as before."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import psycopg
import pytest
from pydantic import SecretStr

from services.common.contracts import BenchmarkReleased
from services.common.db import open_pool
from services.common.runtime import Resources
from services.gateway.app import GatewaySettings, build_app
from services.gateway.auth import token_hash
from services.gateway.repo import releases

pytestmark = pytest.mark.integration
PROTOCOL = "cxr-label-verification"


@pytest.fixture
async def gateway(gateway_dsn):
    """The app on a fresh schema with a curator and two requested releases, R1 and R2; yields
    (client, pool, dsn)."""
    token = f"rc_c1_{uuid.uuid4().hex}"
    with psycopg.connect(gateway_dsn) as conn:
        conn.execute("INSERT INTO users (user_id, display_name, role, token_sha256, active, token_expires_at)"
                     " VALUES ('c1', 'C1', 'curator', %s, true, now() + interval '1 hour')", (token_hash(token),))
        for release_id in ("R1", "R2"):
            conn.execute("INSERT INTO releases (release_id, protocol, status) VALUES (%s, %s, 'requested')",
                         (release_id, PROTOCOL))
    settings = GatewaySettings(database_url=SecretStr(gateway_dsn))
    app = build_app(settings)
    pool = await open_pool(gateway_dsn)
    # No lifespan (no broker or S3 here): the route needs only the pool and the settings.
    app.state.resources = Resources(settings, pool, None, None, None)  # type: ignore[arg-type]
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway",
                               headers={"Authorization": f"Bearer {token}"}, timeout=60)
    try:
        yield client, pool
    finally:
        await client.aclose()
        await pool.close()


def _released(release_id: str) -> BenchmarkReleased:
    return BenchmarkReleased(study_id=release_id, correlation_id="c", release_id=release_id, protocol=PROTOCOL,
                             released_count=3, holdout_count=2, manifest_key=f"releases/{release_id}/manifest.json",
                             manifest_sha256="ab" * 32)


async def _record(pool, release_id: str, hold_open: float) -> float:
    """record_released in a transaction held open `hold_open` seconds; returns when it committed."""
    async with pool.connection() as conn:
        async with conn.transaction():
            await releases.record_released(conn, _released(release_id), {"policy": "test"})
            await asyncio.sleep(hold_open)
        return time.monotonic()


async def test_a_wait_is_answered_when_the_release_commits_not_at_a_poll(gateway):
    client, pool = gateway
    started = time.monotonic()
    waiting = asyncio.create_task(client.get("/api/v1/releases/R1", params={"wait": 30}))
    await asyncio.sleep(0.3)
    assert not waiting.done()  # still requested: the wait goes on
    committed = await _record(pool, "R1", hold_open=0.4)
    answer = await waiting
    answered = time.monotonic()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "released" and body["released_count"] == 3 and body["holdout_count"] == 2
    assert answered >= committed  # never before the commit (the notification comes with it)
    # At the commit, not at a poll (the CLI polled every 0.5 s) nor after the 30 s wait: a
    # generous bound for a loaded machine, still far from either.
    assert answered - committed < 2.0 and answered - started < 10


async def test_a_wait_for_a_release_not_recorded_ends_after_its_seconds_as_it_is(gateway):
    client, pool = gateway
    started = time.monotonic()
    other = asyncio.create_task(_record(pool, "R2", hold_open=0.0))  # another release's record: not R1's
    answer = await client.get("/api/v1/releases/R1", params={"wait": 1.0})
    await other
    assert answer.status_code == 200 and answer.json()["status"] == "requested"
    assert time.monotonic() - started >= 1.0

    at_once = time.monotonic()
    plain = await client.get("/api/v1/releases/R1")  # no wait: answered at once, as before
    assert plain.status_code == 200 and plain.json()["status"] == "requested"
    released = await client.get("/api/v1/releases/R2", params={"wait": 30})  # already out: at once
    assert released.json()["status"] == "released"
    missing = await client.get("/api/v1/releases/nope", params={"wait": 30})
    assert missing.status_code == 404
    assert time.monotonic() - at_once < 5
    assert (await client.get("/api/v1/releases/R1", params={"wait": 61})).status_code == 422
