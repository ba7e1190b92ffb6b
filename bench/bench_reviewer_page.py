"""Reviewer page: keypress → next image painted, in real headless Chromium against the gateway of
the local stack. The page prefetches and decodes the next study, so a vote swaps at once; this
measures that swap (keydown to two animation frames after the new image is set). Target (issue 4):
p95 < 150 ms. Votes that raise an omission confirmation are answered and left out of the figures.

With --rg1 every study's image is a real full-size chest radiograph instead: the CR chest PA of
pydicom-data (RG1, 1955 × 1841, MONOCHROME1, JPEG 2000 lossless, ~0.5–1.2 s to decode), copied
under each synthetic study's identifiers. Besides keypress → painted it then reports how long the
gateway takes to answer the page's image request (served from the derivatives prepared when the
studies were assigned; with --no-derivatives the gateway makes them on the request instead).
Run: .venv/bin/python bench/bench_reviewer_page.py [votes] [--rg1] [--two-view] [--no-derivatives]
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import httpx
import psycopg
from playwright.async_api import async_playwright

from radcurate.client import Gateway
from radcurate.demo import ingest_folder, store_for
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


async def _wait_for_js(page, expression: str, timeout: float = 60) -> None:
    """Poll until truthy: `page.wait_for_function` evaluates a string inside the page, which the
    gateway's Content-Security-Policy forbids (no unsafe-eval); `evaluate` runs outside it."""
    deadline = time.monotonic() + timeout
    while not await page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(expression)
        await asyncio.sleep(0.005)


async def _measure(url: str, token: str, votes: int) -> list[float]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1600, "height": 1000})
        await page.goto(url + "/")
        await page.fill("#token", token)
        await page.click("button[type=submit]")
        kept = []
        for _ in range(votes):
            await _wait_for_js(page, "window.__rc && window.__rc.ready && !document.querySelector('#confirm').open")
            await page.wait_for_timeout(100)  # a reader looks before voting
            before = await page.evaluate("window.__rc.paints.length")
            await page.keyboard.press("1")
            if await page.locator("#confirm").is_visible():
                await page.click("#confirm-ok")
                await _wait_for_js(page, f"window.__rc.paints.length > {before}")
                continue
            await _wait_for_js(page, f"window.__rc.paints.length > {before}")
            kept.append(await page.evaluate("window.__rc.paints[window.__rc.paints.length - 1]"))
        await browser.close()
    return kept


def rg1_studies(data: Path) -> None:
    """Replace every synthetic image by RG1_J2KR under that image's own identifiers and view (a
    two-view study then has two full-size JPEG 2000 radiographs: the PA as frontal and, relabelled,
    as lateral — the decode and render cost of a real lateral, not its anatomy)."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import JPEG2000Lossless

    from services.common import deid

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = pydicom.dcmread(get_testdata_file("RG1_J2KR.dcm", download=False))
    base = original.pixel_array
    for n, path in enumerate(sorted([*(data / "dicom").glob("*.dcm"), *(data / "dicom").glob("*/*.dcm")])):
        rg1 = original.copy()
        # One pixel differs per image (re-encoded losslessly): ingest refuses a second study holding
        # an image whose decoded pixels are another study's (a re-exported twin).
        pixels = base.copy()
        pixels.flat[n] ^= 1
        rg1.compress(JPEG2000Lossless, pixels)
        synthetic = pydicom.dcmread(path, stop_before_pixels=True)
        deid.scrub(rg1, secret="bench", patient_id=str(synthetic.get("PatientID", "P")))
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID", "StudyID",
                        "SeriesDescription", "ViewPosition", "InstanceNumber", "SeriesNumber"):
            if keyword in synthetic:
                setattr(rg1, keyword, synthetic.get(keyword))
        rg1.save_as(path, enforce_file_format=True)


async def _image_latency(state: dict, waits_for_derivatives: bool) -> list[float]:
    """The page's own image request (jpeg, 2048) for every assigned study, as a curator."""
    with psycopg.connect(state["dsns"]["gateway"]) as conn:
        studies = [r[0] for r in conn.execute("SELECT DISTINCT study_id FROM assignments ORDER BY 1")]
    if waits_for_derivatives:  # they are made in the background after assignment: let them finish
        store = store_for(state)
        with psycopg.connect(state["dsns"]["gateway"]) as conn:
            shas = [r[0] for r in conn.execute("SELECT o.sha256 FROM study_objects o JOIN"
                                               " (SELECT DISTINCT study_id FROM assignments) a USING (study_id)")]
        from services.gateway.derivatives import MASTER, derivative_key

        deadline = time.monotonic() + 600
        while not all(store.exists(state["buckets"]["objects"], derivative_key(s, MASTER)) for s in shas):
            if time.monotonic() > deadline:
                raise TimeoutError("derivatives not made within 10 minutes")
            await asyncio.sleep(1)
    took = []
    async with httpx.AsyncClient(base_url=state["gateway_url"], timeout=60,
                                 headers={"Authorization": f"Bearer {state['admin_token']}"}) as client:
        for sid in studies:
            t0 = time.perf_counter()
            resp = await client.get(f"/api/v1/studies/{sid}/image", params={"format": "jpeg", "size": 2048})
            took.append((time.perf_counter() - t0) * 1000)
            resp.raise_for_status()
    return took


def _figures(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), statistics.quantiles(values, n=20, method="inclusive")[18]


def main(votes: int, rg1: bool = False, derivatives: bool = True, two_view: bool = False) -> None:
    if not derivatives:
        os.environ["RADCURATE_GATEWAY_DERIVATIVE_WORKERS"] = "0"  # nothing made ahead: made on request
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synth"
        synth_cxr(votes + 40, 0, data, lateral=two_view)
        if rg1:
            rg1_studies(data)
        state = local.up(Path(tmp) / "stack")
        try:
            token = asyncio.run(_reader(state, data, votes))
            latency = asyncio.run(_image_latency(state, derivatives)) if rg1 else []
            kept = asyncio.run(_measure(state["gateway_url"], token, votes))
        finally:
            local.down(Path(tmp) / "stack")
    what = "RG1 JPEG 2000 chest radiographs" if rg1 else "synthetic studies"
    if two_view:
        what = f"two-view (frontal + lateral) studies of {what}"
    if latency:
        p50, p95 = _figures(latency)
        print(f"image request (jpeg 2048) over {len(latency)} {what}, derivatives "
              f"{'made at assignment' if derivatives else 'made on request'}: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    p50, p95 = _figures(kept)
    print(f"keypress → next image painted over {len(kept)} votes on {what}: p50 {p50:.1f} ms, p95 {p95:.1f} ms "
          f"(target p95 < {TARGET_P95_MS:.0f} ms, ratio {p95 / TARGET_P95_MS:.2f})")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(int(args[0]) if args else 40, rg1="--rg1" in sys.argv, derivatives="--no-derivatives" not in sys.argv,
         two_view="--two-view" in sys.argv)
