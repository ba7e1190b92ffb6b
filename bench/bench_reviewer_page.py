"""Reviewer page: keypress → next image painted, in real headless Chromium against the gateway of
the local stack. The page prefetches and decodes the next study, so a vote swaps at once; this
measures that swap (keydown to two animation frames after the new image is set). Target (issue 4):
p95 < 150 ms. Votes that raise an omission confirmation are answered and left out of the figures.
Run: .venv/bin/python bench/bench_reviewer_page.py [votes]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

from playwright.async_api import async_playwright

from radcurate.client import Gateway
from radcurate.demo import ingest_folder
from radcurate.stack import local
from radcurate.synth import synth_cxr

TARGET_P95_MS = 150.0
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


async def _reader(state: dict, data: Path, votes: int) -> str:
    await ingest_folder(state, data)
    admin = Gateway(state["gateway_url"], state["admin_token"])
    try:
        while (f := (await admin.progress())["funnel"])["suggested"] < f["ingested"]:
            await asyncio.sleep(0.5)
        tokens = [await admin.create_user(f"page-{i}", "reviewer") for i in range(3)]
        await admin.request_sampling({"n": votes + 2, "readers_per_study": 3, "seed": 0, "min_per_label": 0})
        while (await admin.progress())["funnel"]["assignments"] < 3 * (votes + 2):
            await asyncio.sleep(0.5)
    finally:
        await admin.aclose()
    return tokens[0]


async def _measure(url: str, token: str, votes: int) -> list[float]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1600, "height": 1000})
        await page.goto(url + "/")
        await page.fill("#token", token)
        await page.click("button[type=submit]")
        kept = []
        for _ in range(votes):
            await page.wait_for_function("window.__rc && window.__rc.ready && !document.querySelector('#confirm').open")
            await page.wait_for_timeout(100)  # a reader looks before voting
            before = await page.evaluate("window.__rc.paints.length")
            await page.keyboard.press("1")
            if await page.locator("#confirm").is_visible():
                await page.click("#confirm-ok")
                await page.wait_for_function(f"window.__rc.paints.length > {before}")
                continue
            await page.wait_for_function(f"window.__rc.paints.length > {before}")
            kept.append(await page.evaluate("window.__rc.paints[window.__rc.paints.length - 1]"))
        await browser.close()
    return kept


def main(votes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synth"
        synth_cxr(votes + 40, 0, data)
        state = local.up(Path(tmp) / "stack")
        try:
            token = asyncio.run(_reader(state, data, votes))
            kept = asyncio.run(_measure(state["gateway_url"], token, votes))
        finally:
            local.down(Path(tmp) / "stack")
    p50 = statistics.median(kept)
    p95 = statistics.quantiles(kept, n=20, method="inclusive")[18]
    print(f"keypress → next image painted over {len(kept)} votes: p50 {p50:.1f} ms, p95 {p95:.1f} ms "
          f"(target p95 < {TARGET_P95_MS:.0f} ms, ratio {p95 / TARGET_P95_MS:.2f})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
