"""Issue 15: while decisions stream in (a saturated panel), checking ahead gathers them into
rounds at most every CHECK_EVERY_SECONDS instead of one per settle pause (each round costs a few
statements), and checks everything left at the first quiet pause, so the last decision's objects
are checked right after it (services/consensus/release_ahead.py). The rounds themselves are
recorded, not run: this is the scheduling alone."""

from __future__ import annotations

import asyncio
import time

from services.consensus import release_ahead
from services.consensus.release_ahead import ReleaseAhead


async def never(conn, protocol):
    raise AssertionError("not computed here")


async def test_checks_gather_while_decisions_stream_and_run_at_the_first_quiet_pause(monkeypatch) -> None:
    # wider than the service's pauses, so that a loaded machine's scheduling delays stay inside them
    monkeypatch.setattr(release_ahead, "SETTLE_SECONDS", 0.2)
    monkeypatch.setattr(release_ahead, "CHECK_EVERY_SECONDS", 1.0)
    ahead = ReleaseAhead(None, "", never)
    ahead.catch_up = False
    rounds: list[tuple[float, bool]] = []

    async def run_once(pool, checks: bool = True):
        rounds.append((time.monotonic(), checks))
        if checks:
            ahead._accepted = set()
        return {}
    monkeypatch.setattr(ahead, "run_once", run_once)
    monkeypatch.setattr(ahead, "_importing", object())  # nothing to import here
    task = asyncio.create_task(ahead.run_forever(None))
    started = time.monotonic()
    i = 0
    while time.monotonic() - started < 2.5:  # a decision every 20 ms for 2.5 s
        ahead.note(f"S{i}", "cxr-label-verification", accepted=True)
        i += 1
        await asyncio.sleep(0.02)
    stopped = time.monotonic()
    await asyncio.sleep(4 * release_ahead.SETTLE_SECONDS)
    task.cancel()
    checked = [at for at, checks in rounds if checks]
    streaming = [at for at in checked if at < stopped]
    # while streaming: about one round of checks per CHECK_EVERY_SECONDS, not one per settle pause
    assert 1 <= len(streaming) <= 2.5 / release_ahead.CHECK_EVERY_SECONDS + 1
    assert len([at for at, checks in rounds if not checks and at < stopped]) >= 5
    # the first quiet pause checks what is left: within two settle pauses of the last decision
    assert any(stopped < at <= stopped + 2 * release_ahead.SETTLE_SECONDS + 0.15 for at in checked)
    assert ahead._accepted == set()
