"""The consumer asks the broker for short fetch waits while events flow and long ones when idle
(services/common/fetch_pacing.py), against the real broker: the waits are read off the fetch
requests the client builds."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.consumer import fetcher

from services.common import outbox
from services.common.db import unit_of_work
from tests.integration.test_outbox_and_consumer import Harness, produce, record_applied, report

pytestmark = pytest.mark.integration

# The spell must outlast an idle fetch: after the service publishes, the long fetch then in flight
# returns up to IDLE_MS later, and the next one is built short only if the spell still holds (the
# local stack: 30 s against 500 ms). With 1.5 s against 2 s, CI saw three long fetches after it.
IDLE_MS, ACTIVE_MS, ACTIVE_S = 2_000, 50, 3.0


@pytest.fixture
def fetch_waits(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, int]]:
    """(loop time, max wait in ms) of every fetch request the consumers build."""
    seen: list[tuple[float, int]] = []
    real = fetcher.FetchRequest

    def spy(max_wait_time: int, *args: Any, **kwargs: Any) -> Any:
        seen.append((asyncio.get_running_loop().time(), max_wait_time))
        return real(max_wait_time, *args, **kwargs)

    monkeypatch.setattr(fetcher, "FetchRequest", spy)
    return seen


async def test_fetches_wait_briefly_after_events_and_for_the_idle_wait_once_they_stop(
        infra, fresh_schema, fresh_topic, fetch_waits):
    async with Harness(infra, fresh_schema, fresh_topic, record_applied, fetch_max_wait_ms=IDLE_MS,
                       fetch_active_wait_ms=ACTIVE_MS, fetch_active_seconds=ACTIVE_S) as h:
        loop = asyncio.get_running_loop()
        marks: dict[str, float] = {}

        async def scenario() -> bool:
            if "applied" not in marks:
                if await h.count("SELECT count(*) FROM applied") < 1:
                    return False
                marks["applied"] = loop.time()
            if loop.time() < marks["applied"] + ACTIVE_S + 2 * IDLE_MS / 1000:
                return False  # the short spell passes, and a long fetch or two go out
            if "published" not in marks:  # now the service itself publishes: an answer is likely
                async with unit_of_work(h.pool) as conn:
                    await outbox.record(conn, [report("ASKS")])
                h.relay.notify()
                marks["published"] = loop.time()
            # the long fetch in flight at the publish returns within IDLE_MS; the next one is short.
            # Wait for it (a loaded machine may take a while), up to a bound the assertion reports
            return (any(ms == ACTIVE_MS and at > marks["published"] + 0.2 for at, ms in fetch_waits)
                    or loop.time() > marks["published"] + 3 * IDLE_MS / 1000)

        await produce(h.bootstrap, fresh_topic, [("S1", report("S1").model_dump_json().encode())])
        await h.run_until(scenario, timeout=40)

    assert "published" in marks, "the event was never applied"
    applied, published = marks["applied"], marks["published"]
    assert fetch_waits[0][1] == IDLE_MS  # a consumer that has seen nothing waits long
    spell = [ms for at, ms in fetch_waits if applied + 0.2 < at < applied + ACTIVE_S - 0.2]
    assert spell and set(spell) == {ACTIVE_MS}  # records seen: short waits, several of them
    quiet = [ms for at, ms in fetch_waits if applied + ACTIVE_S + 0.3 < at < published]
    assert quiet and set(quiet) == {IDLE_MS}  # nothing for the active seconds: back to the idle wait
    answer = [ms for at, ms in fetch_waits if at > published + 0.2]
    # the service's own publish makes the fetches short again once the long one in flight returns
    assert ACTIVE_MS in answer
