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
from services.gateway.api.routes.releases import RELEASE_LISTENER
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
    app.state.resources = res = Resources(settings, pool, None, None, None)  # type: ignore[arg-type]
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway",
                               headers={"Authorization": f"Bearer {token}"}, timeout=60)
    try:
        yield client, pool
    finally:
        await client.aclose()
        if (listener := res.extra.get(RELEASE_LISTENER)) is not None:  # what the app's _stop does
            await listener.close()
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


# Many researchers waiting on one gateway: one LISTEN connection for all of them, not one each.
# (Each waiter held its own Postgres connection: ~100 waiters exhausted Postgres's connections.)
WAITERS = 120
LISTEN_APP = "radcurate-gateway-release-wait"


def _backends(dsn: str) -> list[dict]:
    """This Postgres's client backends, each with its application_name (the test stack's Postgres
    serves this test session only)."""
    with psycopg.connect(dsn, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute("SELECT pid, application_name FROM pg_stat_activity WHERE backend_type = 'client backend'"
                            " AND pid <> pg_backend_pid()").fetchall()


async def _until(condition, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_many_waiters_share_one_listening_connection(gateway, gateway_dsn):
    client, pool = gateway
    before = len(_backends(gateway_dsn))
    r1 = [asyncio.create_task(client.get("/api/v1/releases/R1", params={"wait": 30})) for _ in range(WAITERS)]
    r2 = [asyncio.create_task(client.get("/api/v1/releases/R2", params={"wait": 30})) for _ in range(5)]
    await asyncio.sleep(2.0)  # every waiter's request in and waiting (on main: each on its own connection)
    during = _backends(gateway_dsn)
    assert not any(t.done() for t in r1 + r2)
    # The pool's connections (at most its max_size, 8, for the waiters' reads) and one listener.
    assert len(during) - before <= pool.max_size + 1, f"{len(during) - before} more backends while waiting"
    assert [b["application_name"] for b in during].count(LISTEN_APP) == 1

    committed = await _record(pool, "R1", hold_open=0.0)
    answers = await asyncio.gather(*r1)
    assert all(a.status_code == 200 and a.json()["status"] == "released" for a in answers)
    assert time.monotonic() - committed < 10  # at the commit, not after the 30 s wait
    await asyncio.sleep(0.2)
    assert not any(t.done() for t in r2)  # R1's record is not R2's
    await _record(pool, "R2", hold_open=0.0)
    assert all(a.json()["status"] == "released" for a in await asyncio.gather(*r2))


async def test_a_release_recorded_while_the_listening_connection_is_lost_is_not_missed(gateway, gateway_dsn):
    client, pool = gateway
    waiters = [asyncio.create_task(client.get("/api/v1/releases/R1", params={"wait": 30})) for _ in range(3)]
    await _until(lambda: [b["application_name"] for b in _backends(gateway_dsn)].count(LISTEN_APP) == 1)
    await asyncio.sleep(0.3)  # the waiters have read R1 as requested and wait
    assert not any(t.done() for t in waiters)
    (lost,) = [b["pid"] for b in _backends(gateway_dsn) if b["application_name"] == LISTEN_APP]
    # Blocking calls on purpose: the event loop (the gateway's listener with it) is held until the
    # release has committed, so it is recorded while no LISTEN stands and its notification is lost.
    with psycopg.connect(gateway_dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (lost,))
        deadline = time.monotonic() + 10
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (lost,)).fetchone():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with admin.transaction():
            admin.execute("UPDATE releases SET status = 'released', released_count = 3 WHERE release_id = 'R1'")
            admin.execute("SELECT pg_notify(%s, 'R1')", (releases.RELEASE_RECORDED,))
        gone_at = time.monotonic()
    answers = await asyncio.gather(*waiters)
    assert all(a.json()["status"] == "released" for a in answers)
    assert time.monotonic() - gone_at < 10  # read again after the reconnect, not at the end of the 30 s
    listening = [b["pid"] for b in _backends(gateway_dsn) if b["application_name"] == LISTEN_APP]
    assert len(listening) == 1 and listening != [lost]  # listening again, on a new connection

    # And the new connection hears the next release as before.
    with psycopg.connect(gateway_dsn) as conn:
        conn.execute("INSERT INTO releases (release_id, protocol, status) VALUES ('R3', %s, 'requested')", (PROTOCOL,))
    waiting = asyncio.create_task(client.get("/api/v1/releases/R3", params={"wait": 30}))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    committed = await _record(pool, "R3", hold_open=0.0)
    assert (await waiting).json()["status"] == "released" and time.monotonic() - committed < 5
