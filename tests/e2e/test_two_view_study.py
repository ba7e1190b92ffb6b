"""A CXR study of two images (frontal + lateral) through the funnel to the reviewer page, in real
headless Chromium against all five services: the study view hangs them, the page shows them side
by side (frontal left, lateral right), each with its own window, and a screenshot shows both."""

from __future__ import annotations

import io
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from radcurate.client import Gateway
from radcurate.synth import write_cxr_dicom
from tests.e2e.conftest import eventually, sample_for_new_panel, sign_in_reader, wait_for_js

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
REPORT = ("EXAMINATION: CHEST PA AND LATERAL\nFINDINGS:\nCardiomegaly. No pleural effusion.\n\n"
          "IMPRESSION:\nCardiomegaly.")


async def ingest_two_views(stack, tmp_path: Path, study_id: str, seed: int) -> httpx.Response:
    files = []
    for name, view in (("lateral.dcm", "LL"), ("frontal.dcm", "PA")):  # stored order must not matter
        path = tmp_path / f"{study_id}-{name}"
        write_cxr_dicom(path, study_id=study_id, patient_id=f"P-{study_id}", seed=seed, view_position=view)
        files.append(("files", (name, path.read_bytes(), "application/dicom")))
    async with httpx.AsyncClient(base_url=stack["gateway_url"]) as client:
        return await client.post("/api/v1/studies", headers={"Authorization": f"Bearer {stack['admin_token']}"},
                                 data={"study_id": study_id, "patient_id": f"P-{study_id}", "report": REPORT},
                                 files=files)


def _has_content(shot: Image.Image, box: dict) -> float:
    """The spread of grey levels in the middle of a box of the screenshot (a blank area is ~0)."""
    x, y, w, h = box["x"], box["y"], box["width"], box["height"]
    crop = shot.crop((int(x + w * 0.2), int(y + h * 0.2), int(x + w * 0.8), int(y + h * 0.8))).convert("L")
    return float(np.asarray(crop, dtype=np.float32).std())


async def test_a_frontal_and_lateral_study_is_shown_side_by_side_each_with_its_own_window(stack, browser, tmp_path):
    admin = Gateway(stack["gateway_url"], stack["admin_token"])
    studies = [f"TWOVIEW-{i}" for i in range(2)]
    for i, sid in enumerate(studies):
        resp = await ingest_two_views(stack, tmp_path, sid, seed=40 + i)
        assert resp.status_code == 201, resp.text
        assert len(resp.json()["objects"]) == 2
    readers = [f"twoview-{k}" for k in (1, 2, 3)]
    tokens = await sample_for_new_panel(admin, readers, n=2)
    reader = admin.as_user(tokens[readers[0]])

    async def mine() -> list[dict]:
        return [a for a in await reader.worklist() if a["study_id"] in studies]

    await eventually(mine, f"a two-view study assigned to {readers[0]}")
    assignment = (await mine())[0]
    sid = assignment["study_id"]

    # The assignment and the study view hang the two images: frontal first, each by its index.
    views = assignment["views"]
    assert [v["view"] for v in views] == ["frontal", "lateral"]
    assert sorted(v["instance"] for v in views) == [0, 1]
    study_view = (await reader.request("GET", f"/api/v1/studies/{sid}")).json()
    assert study_view["instances"] == 2 and study_view["views"] == views
    pngs = [(await reader.request("GET", v["image_url"] + "&size=256")).content for v in views]
    assert pngs[0] != pngs[1]

    page = await browser.new_page(viewport={"width": 1600, "height": 1000})
    await sign_in_reader(page, stack, tokens[readers[0]])
    if (await page.locator("#study-title").inner_text()).removeprefix("Study ") != sid:
        await page.locator("#todo button", has_text=sid).click()
    await wait_for_js(page, f"document.getElementById('study-title').textContent.includes('{sid}')")
    await wait_for_js(page, "document.getElementById('app').classList.contains('two-view')")
    await wait_for_js(page, "document.getElementById('image').naturalWidth > 0"
                      " && document.getElementById('image-lateral').naturalWidth > 0")

    frontal, lateral = await page.locator("#stage").bounding_box(), await page.locator("#stage-lateral").bounding_box()
    assert frontal["width"] > 300 and lateral["width"] > 300
    assert frontal["x"] + frontal["width"] <= lateral["x"] + 1  # side by side, frontal on the left
    assert abs(frontal["y"] - lateral["y"]) < 1 and abs(frontal["height"] - lateral["height"]) < 1

    # Each image its own window: the lung preset on the lateral leaves the frontal as it was.
    await page.locator("#stage-lateral").click()
    await page.keyboard.press("l")
    await wait_for_js(page, "document.getElementById('wl-readout-lateral').textContent.includes('Lung')")
    assert "Lung" not in await page.locator("#wl-readout").inner_text()
    await page.keyboard.press("+")
    zoom = "new DOMMatrix(getComputedStyle(document.getElementById('{}')).transform).a"
    assert await page.evaluate(zoom.format("image-lateral")) > 1.2
    assert await page.evaluate(zoom.format("image")) == 1

    # To look at: RADCURATE_SCREENSHOTS=/some/dir keeps it (pytest's tmp_path is cleaned up).
    path = Path(os.environ.get("RADCURATE_SCREENSHOTS", tmp_path)) / "two-view.png"
    await page.screenshot(path=str(path))
    shot = Image.open(io.BytesIO(path.read_bytes()))
    assert _has_content(shot, frontal) > 10 and _has_content(shot, lateral) > 10
    await admin.aclose()
