"""Gateway under load: 200 concurrent simulated readers (next assignment → vote, as fast as they
can) against the gateway of the local stack. Targets (issue 4): p99 < 50 ms for next and vote,
>= 1,000 votes/s. The client runs on the same machine as the whole stack, so on a small machine
the figures measure the machine as much as the gateway.
Run: .venv/bin/python bench/bench_gateway_load.py [studies] [readers]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from radcurate.client import Gateway
from radcurate.demo import ingest_folder
from radcurate.stack import local
from radcurate.synth import synth_cxr

TARGET_P99_MS, TARGET_VOTES_PER_S = 50.0, 1000.0


async def _prepare(state: dict, data: Path, studies: int, n_readers: int) -> list[str]:
    await ingest_folder(state, data)
    admin = Gateway(state["gateway_url"], state["admin_token"])
    try:
        while (f := (await admin.progress())["funnel"])["suggested"] < f["ingested"]:
            await asyncio.sleep(0.5)
        tokens = [await admin.create_user(f"load-{i:03d}", "reviewer") for i in range(n_readers)]
        await admin.request_sampling({"n": studies, "readers_per_study": 3, "seed": 0, "min_per_label": 0})
        while (await admin.progress())["funnel"]["assignments"] < 3 * studies:
            await asyncio.sleep(0.5)
    finally:
        await admin.aclose()
    return tokens


async def _timed(lat: list[float], errors: list[str], send) -> httpx.Response:
    """One request, timed; a dropped connection (keep-alive race) is retried and counted."""
    while True:
        t0 = time.perf_counter()
        try:
            resp = await send()
        except httpx.TransportError as exc:
            errors.append(type(exc).__name__)
            continue
        lat.append(time.perf_counter() - t0)
        return resp


async def _reader(client: httpx.AsyncClient, token: str, lat: dict[str, list[float]], errors: list[str]) -> int:
    auth = {"Authorization": f"Bearer {token}"}
    votes = 0
    while True:
        resp = await _timed(lat["next"], errors, lambda: client.get("/api/v1/reviews/next", headers=auth))
        if resp.status_code == 204:
            return votes
        a = resp.json()
        r = await _timed(lat["vote"], errors, lambda a=a: client.post(
            f"/api/v1/reviews/{a['assignment_id']}/vote", headers={**auth, "Idempotency-Key": a["assignment_id"]},
            json={"verdict": "agree_all", "confirm": True, "seconds_spent": 20}))
        assert r.status_code in (200, 201), r.text
        votes += 1


async def _load(url: str, tokens: list[str]) -> tuple[dict[str, list[float]], int, float]:
    lat: dict[str, list[float]] = {"next": [], "vote": []}
    errors: list[str] = []
    limits = httpx.Limits(max_connections=len(tokens), max_keepalive_connections=len(tokens))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        started = time.perf_counter()
        votes = sum(await asyncio.gather(*(_reader(client, t, lat, errors) for t in tokens)))
        seconds = time.perf_counter() - started
    if errors:
        print(f"{len(errors)} dropped connections retried ({sorted(set(errors))})")
    return lat, votes, seconds


def _pct(xs: list[float], p: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[p - 1] * 1000 if len(xs) > 1 else xs[0] * 1000


def main(studies: int, n_readers: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synth"
        synth_cxr(studies, 0, data)
        state = local.up(Path(tmp) / "stack")
        try:
            tokens = asyncio.run(_prepare(state, data, studies, n_readers))
            lat, votes, seconds = asyncio.run(_load(state["gateway_url"], tokens))
        finally:
            local.down(Path(tmp) / "stack")
    for op in ("next", "vote"):
        p50, p99 = _pct(lat[op], 50), _pct(lat[op], 99)
        print(f"{op:5s}: n={len(lat[op])} p50 {p50:.1f} ms  p99 {p99:.1f} ms (target p99 < {TARGET_P99_MS:.0f} ms, "
              f"ratio {p99 / TARGET_P99_MS:.2f})")
    rate = votes / seconds
    print(f"{n_readers} readers cast {votes} votes in {seconds:.1f}s: {rate:.0f} votes/s "
          f"(target {TARGET_VOTES_PER_S:.0f}/s, ratio {rate / TARGET_VOTES_PER_S:.2f})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000, int(sys.argv[2]) if len(sys.argv) > 2 else 200)
