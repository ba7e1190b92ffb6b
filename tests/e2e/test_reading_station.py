"""The reading station (issue 14 §1) in real headless Chromium against all five services: the report
with its evidence marked and the study facts, windowing on the real pixel values, undo of the last
vote within its grace period (checked against the votes table), and keyboard-only use checked
through the browser's accessibility tree."""

from __future__ import annotations

import asyncio
import io
import os
import re
from pathlib import Path

import pydicom
import pytest

from radcurate.client import Gateway
from tests.e2e.conftest import eventually, query, sample_for_new_panel, scalar, sign_in_reader, wait_for_js
from tests.e2e.test_bad_input import ingest_http
from tests.support.factories import dicom_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
REPORT = ("EXAMINATION: CHEST PA AND LATERAL\nINDICATION: Cough and fever for three days.\nCOMPARISON: None.\n\n"
          "FINDINGS:\nRight lower lobe consolidation. Small right pleural effusion.\n\nIMPRESSION:\nPneumonia.")


async def _reader_with_work(stack, tmp_path, prefix: str, make=dicom_bytes) -> tuple[str, Gateway]:
    """Three fresh studies and a fresh panel of three; the first reader's token once two reads wait."""
    admin = Gateway(stack["gateway_url"], stack["admin_token"])
    for i in range(3):
        sid = f"{prefix}-{i}"
        assert (await ingest_http(stack, sid, make(tmp_path, sid, seed=i), REPORT)).status_code == 201
    readers = [f"{prefix.lower()}-{k}" for k in (1, 2, 3)]
    tokens = await sample_for_new_panel(admin, readers, n=2)
    reader = admin.as_user(tokens[readers[0]])

    async def has_work() -> bool:
        return len(await reader.worklist()) == 2

    await eventually(has_work, f"assignments for {readers[0]}")
    return tokens[readers[0]], admin


def _monochrome1_bytes(tmp_path, study_id: str, seed: int) -> bytes:
    """The same radiograph stored as MONOCHROME1 (as many CR systems write it): values inverted,
    the lowest white, the file's window mirrored with them."""
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(tmp_path, study_id, seed=seed)))
    top = (1 << ds.BitsStored) - 1
    ds.PixelData = (top - ds.pixel_array).astype(ds.pixel_array.dtype).tobytes()
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.WindowCenter = top - float(ds.WindowCenter)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


async def _title(page) -> str:
    return (await page.locator("#study-title").inner_text()).removeprefix("Study ")


async def _vote_agree(page) -> None:
    await page.keyboard.press("1")
    await asyncio.sleep(0.2)
    if await page.locator("#confirm").is_visible():  # a finding with no label asks first
        await page.locator("#confirm-ok").click()


def _votes(stack, reader: str) -> dict[str, str]:
    return dict(query(stack, "gateway", "SELECT study_id, judgement->>'verdict' FROM votes WHERE reader_id = %s",
                      (reader,)))


async def test_the_report_with_its_evidence_and_the_study_facts_beside_a_window_on_real_values(
        stack, browser, tmp_path):
    token, admin = await _reader_with_work(stack, tmp_path, "FACT")
    page = await browser.new_page(viewport={"width": 1600, "height": 1000})
    windows: list[str] = []
    page.on("response", lambda r: windows.append(f"{r.status} {r.url}") if "window_center" in r.url else None)
    await sign_in_reader(page, stack, token, 10_000)
    study = await _title(page)

    # The report whole, the evidence of each suggested label marked within it.
    report = await page.locator("#report").inner_text()
    assert report.strip() == REPORT.strip()
    suggested = (await admin.request("GET", f"/api/v1/studies/{study}")).json()["suggested"]
    evidence = {e for s in suggested for e in s["evidence"]}
    marks = await page.locator("#report mark").all_inner_texts()
    assert marks and set(marks) <= evidence, (marks, evidence)
    assert "consolidation" in " ".join(await page.locator("#report mark").evaluate_all("ms => ms.map(m => m.title)"))

    # The facts: the view and date from the de-identified DICOM, the indication from the report;
    # never the sampler's difficulty.
    view, day = query(stack, "gateway", "SELECT view_position, study_date::text FROM studies WHERE study_id = %s",
                      (study,))[0]
    facts = await page.locator("#study-facts").inner_text()
    assert view == "PA" and re.search(r"View\s+PA", facts) and day in facts
    assert "Cough and fever for three days." in facts
    assert "difficulty" not in (await page.locator(".panel").inner_text()).lower()

    # Window presets act on the real values: the gateway renders the window from the 16-bit
    # master; the lung preset sits relative to the file's own window (1700/3200).
    await page.locator("#stage").focus()
    await page.keyboard.press("l")
    await wait_for_js(page, "window.__rc.window && Math.round(window.__rc.window.center) === 1316")
    assert await page.evaluate("Math.round(window.__rc.window.width)") == 2240
    assert any(w.startswith("200 ") and "window_center=1316.0" in w for w in windows), windows
    assert await page.evaluate("document.getElementById('image').src.startsWith('blob:')")
    assert "Lung" in await page.locator("#wl-readout").inner_text()
    await page.keyboard.press("b")
    await wait_for_js(page, "Math.round(window.__rc.window.center) === 2660")
    await page.keyboard.press("i")
    assert await page.locator("#invert").get_attribute("aria-pressed") == "true"
    assert float(await page.locator("#wl feFuncR").get_attribute("slope")) < 0

    # Zoom at the cursor: the point under the cursor stays put; pan with Shift-drag.
    box = await page.locator("#stage").bounding_box()
    x, y = box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.3
    await page.mouse.move(x, y)
    await page.mouse.wheel(0, -300)
    m = await page.evaluate("new DOMMatrix(getComputedStyle(document.getElementById('image')).transform)")
    assert m["a"] > 1.1
    # image point under the cursor before (scale 1, no shift) == after: (p - t) / s
    assert abs((x - box["x"] - m["e"]) / m["a"] - (x - box["x"])) < 1.5
    await page.keyboard.down("Shift")
    await page.mouse.down()
    await page.mouse.move(x + 80, y + 40)
    await page.mouse.up()
    await page.keyboard.up("Shift")
    m2 = await page.evaluate("new DOMMatrix(getComputedStyle(document.getElementById('image')).transform)")
    assert (round(m2["e"] - m["e"]), round(m2["f"] - m["f"])) == (80, 40)
    # To look at: RADCURATE_SCREENSHOTS=/some/dir keeps it (pytest's tmp_path is cleaned up).
    await page.screenshot(path=str(Path(os.environ.get("RADCURATE_SCREENSHOTS", tmp_path)) / "reading-station.png"))
    await page.keyboard.press("p")  # 1:1: one pixel of the full-resolution image per screen pixel
    await wait_for_js(page, "(() => { const i = document.getElementById('image'), s = document.getElementById('stage');"
                      " const shown = Math.min(s.clientWidth / i.naturalWidth, s.clientHeight / i.naturalHeight)"
                      " * new DOMMatrix(getComputedStyle(i).transform).a;"
                      " return Math.abs(shown * devicePixelRatio - 1) < 1e-4; })()", timeout=10)
    assert any("size=4096" in w and "window_center=2660.0" in w for w in windows), windows
    await page.keyboard.press("r")
    await wait_for_js(page, "Math.round(window.__rc.window.center) === 1700")
    assert await page.locator("#invert").get_attribute("aria-pressed") == "false"
    await admin.aclose()


async def test_an_undone_vote_is_never_stored_and_one_left_alone_is_stored_after_the_grace_period(
        stack, browser, tmp_path):
    token, admin = await _reader_with_work(stack, tmp_path, "UNDO")
    page = await browser.new_page(viewport={"width": 1600, "height": 1000})
    await sign_in_reader(page, stack, token, 3_000)
    first = await _title(page)
    await page.locator("#comment").fill("looks like pneumonia")
    await page.locator("#stage").focus()  # keys typed in the comment are text, not votes

    await _vote_agree(page)
    await page.locator("#undo-box").wait_for(state="visible")
    await page.screenshot(path=str(Path(os.environ.get("RADCURATE_SCREENSHOTS", tmp_path)) / "undo.png"))
    second = await _title(page)
    assert second != first and "to read" in await page.locator("#counts").inner_text()
    await page.keyboard.press("u")
    await page.locator("#status", has_text=f"Vote on {first} undone").wait_for()
    assert await _title(page) == first
    assert await page.locator("#comment").input_value() == "looks like pneumonia"  # as the reader left it
    assert await page.locator("#undo-box").is_hidden()
    await asyncio.sleep(3.5)  # past the grace period: an undone vote was never sent
    assert _votes(stack, "undo-1") == {}

    # The same vote again, left alone: stored once the grace period has passed, not before.
    await _vote_agree(page)
    assert await _title(page) == second  # the prefetch skipped the study whose vote is held back
    assert _votes(stack, "undo-1") == {}
    await wait_for_js(page, "window.__rc.votes === 1", timeout=10)
    assert _votes(stack, "undo-1") == {first: "agree_all"}
    assert scalar(stack, "gateway", "SELECT count(*) FROM votes WHERE reader_id = 'undo-1' AND comment = %s",
                  ("looks like pneumonia",)) == 1

    # Signing out sends a vote still held back (the reader decided it), then leaves nothing.
    await _vote_agree(page)
    assert await page.locator("#undo-box").is_visible()
    await page.get_by_role("button", name="Sign out").click()
    await page.locator("#login").wait_for(state="visible")
    assert _votes(stack, "undo-1") == {first: "agree_all", second: "agree_all"}
    assert await page.locator("#undo-box").is_hidden()
    await admin.aclose()


async def test_a_vote_sent_as_the_reader_moves_on_brings_the_study_after_next_and_undo_still_holds(
        stack, browser, tmp_path):
    """A held-back vote sent because the reader voted again asks the gateway for the study after
    the one now on screen (`?next=true`): no `GET /next` of its own. Undo, the prefetch's skips
    and the grace period behave as before; every vote is stored once, as the reader last cast it."""
    admin = Gateway(stack["gateway_url"], stack["admin_token"])
    for i in range(4):
        sid = f"NEXT-{i}"
        assert (await ingest_http(stack, sid, dicom_bytes(tmp_path, sid, seed=i), REPORT)).status_code == 201
    tokens = await sample_for_new_panel(admin, ["nxt-1", "nxt-2", "nxt-3"], n=4)
    reader = admin.as_user(tokens["nxt-1"])

    async def has_work() -> bool:
        return len(await reader.worklist()) == 4

    await eventually(has_work, "assignments for nxt-1")
    page = await browser.new_page(viewport={"width": 1600, "height": 1000})
    calls: list[str] = []
    page.on("request", lambda r: calls.append(f"{r.method} {r.url.split('/api/v1/reviews', 1)[1]}")
            if "/api/v1/reviews/" in r.url else None)

    def count(kind: str) -> int:
        return len([c for c in calls if (c.startswith("GET /next") if kind == "next" else c.startswith("POST")
                                         and ("next=true" in c) == (kind == "vote+next"))])

    async def vote_and_move_on() -> None:
        before = await _title(page)
        await _vote_agree(page)
        await wait_for_js(page, f"!document.getElementById('study-title').innerText.endsWith({before!r})")
        await wait_for_js(page, "window.__rc.ready")
        seen.append(await _title(page))

    await sign_in_reader(page, stack, tokens["nxt-1"], 60_000)  # held back until the reader votes again
    seen = [await _title(page)]
    await vote_and_move_on()  # A held; B on screen, C fetched ahead by GET /next (no vote to carry it)
    await vote_and_move_on()  # B held; A sent, asking for the study after C
    assert await page.evaluate("window.__rc.votes") == 1 and _votes(stack, "nxt-1") == {seen[0]: "agree_all"}
    assert (count("next"), count("vote+next"), count("vote")) == (3, 1, 0), calls
    post = next(c for c in calls if "next=true" in c)
    assert all(f"after={a}" in post for a in await _assignment_ids(reader, seen[1:])), calls  # B held, C shown

    # Undo the third vote: nothing of it is sent, its study comes back with the comment as left.
    await page.locator("#comment").fill("first thought")
    await page.locator("#stage").focus()
    await vote_and_move_on()  # C held; B sent, asking for the study after D: none
    assert len(set(seen)) == 4  # four different studies, in worklist order, none shown twice
    await page.keyboard.press("u")
    await page.locator("#status", has_text=f"Vote on {seen[2]} undone").wait_for()
    assert await _title(page) == seen[2]
    assert await page.locator("#comment").input_value() == "first thought"
    await page.locator("#comment").fill("second thought")
    await page.locator("#stage").focus()
    await vote_and_move_on()  # C held again (nothing was sent); D back on screen
    assert seen[-1] == seen[3]
    await _vote_agree(page)  # D held; C sent; nothing left after D
    await page.locator("#study-title", has_text="Nothing left to read").wait_for()
    await wait_for_js(page, "window.__rc.votes === 3")
    await page.get_by_role("button", name="Sign out").click()  # sends D's vote, still held back
    await page.locator("#login").wait_for(state="visible")
    assert _votes(stack, "nxt-1") == dict.fromkeys(seen, "agree_all")
    comments = dict(query(stack, "gateway", "SELECT study_id, comment FROM votes WHERE reader_id = 'nxt-1'"))
    assert comments[seen[2]] == "second thought" and len(comments) == 4
    # GET /next: sign-in's load and prefetch, and the prefetches no vote could carry (the first vote's,
    # and the one after the undo); every vote sent because the reader moved on carried the next fetch.
    assert (count("next"), count("vote+next"), count("vote")) == (4, 3, 1), calls
    await admin.aclose()


async def _assignment_ids(reader: Gateway, studies: list[str]) -> list[str]:
    everything = await reader.worklist("open") + await reader.worklist("voted")
    return [a["assignment_id"] for a in everything if a["study_id"] in studies]


def _luminance(rgb: str) -> float:
    r, g, b = (int(v) / 255 for v in re.findall(r"\d+", rgb)[:3])
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def _contrast(fg: str, bg: str) -> float:
    hi, lo = sorted((_luminance(fg), _luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


async def test_the_station_is_usable_by_keyboard_alone_with_named_controls_and_readable_contrast(
        stack, browser, tmp_path):
    token, admin = await _reader_with_work(stack, tmp_path, "KEYS")
    page = await browser.new_page(viewport={"width": 1600, "height": 1000})
    await page.goto(stack["gateway_url"] + "/")
    await page.evaluate("window.__rc.graceMs = 300")
    # Sign in without the mouse: the token field has focus on arrival.
    await page.keyboard.type(token)
    await page.keyboard.press("Enter")
    await wait_for_js(page, "window.__rc && window.__rc.ready")
    first = await _title(page)

    # The accessibility tree names the main controls with their roles.
    tree = await page.locator("#app").aria_snapshot()
    for line in ('group "Radiograph.', 'button "? Shortcuts"', 'button "Sign out"', 'navigation "Worklist"',
                 'toolbar "Image tools"',
                 'button "L Lung"', 'button "I Invert"', 'region "Report', 'group "Verdict"',
                 'button "1 Agree all"', 'button "2 Agree mostly"', 'button "3 Disagree"', 'textbox "Comment"'):
        assert line in tree, f"{line} not in the accessibility tree:\n{tree}"
    assert re.search(r'checkbox "[a-z ]+" \[checked\]', tree), tree

    # Focus order follows the reading: header, worklist, image and its tools, then the study panel
    # (facts, report, labels, comment, verdicts) — and Tab reaches every verdict.
    order: list[str] = []
    for _ in range(40):
        await page.keyboard.press("Tab")
        order.append(await page.evaluate(
            "(() => { const e = document.activeElement; return e.id || e.dataset.verdict || e.dataset.preset"
            " || e.value || e.textContent.trim().slice(0, 20); })()"))
        if order[-1] == "disagree":
            break
    for earlier, later in (("help", "logout"), ("logout", "stage"), ("stage", "lung"), ("reset", "report"),
                           ("report", "comment"), ("comment", "agree_all"), ("agree_all", "disagree")):
        assert order.index(earlier) < order.index(later), order
    # A verdict button with focus votes on Enter, as a click does.
    await page.locator("[data-verdict='agree_all']").focus()
    await page.keyboard.press("Enter")
    if await page.locator("#confirm").is_visible():
        await page.keyboard.press("Tab")  # from "Go back" (the default) to "Confirm and vote"
        await page.keyboard.press("Enter")
    await wait_for_js(page, "window.__rc.votes === 1", timeout=10)
    assert _votes(stack, "keys-1") == {first: "agree_all"}

    # Text on its own background reads at WCAG AA (4.5:1) or better.
    for selector in ("#study-facts dt", "#report", "#report mark", ".who", ".counts", "#wl-readout",
                     ".verdicts button", "#status"):
        fg, bg = await page.locator(selector).first.evaluate(
            "e => { let b = e; let c = getComputedStyle(b).backgroundColor;"
            " while (c === 'rgba(0, 0, 0, 0)' && b.parentElement) {"
            " b = b.parentElement; c = getComputedStyle(b).backgroundColor; }"
            " return [getComputedStyle(e).color, c]; }")
        assert _contrast(fg, bg) >= 4.5, (selector, fg, bg, _contrast(fg, bg))
    await admin.aclose()


async def test_window_presets_mirror_for_a_monochrome1_radiograph(stack, browser, tmp_path):
    """In MONOCHROME1 the lowest value is white, so lung is high in the file's units: the lung
    preset must sit above the file's window centre, not below it (a bone window otherwise)."""
    token, _ = await _reader_with_work(stack, tmp_path, "MONO1", make=_monochrome1_bytes)
    page = await browser.new_page(viewport={"width": 1600, "height": 1000})
    await sign_in_reader(page, stack, token, 10_000)
    study = await _title(page)
    [(photometric, center, width)] = query(
        stack, "gateway", "SELECT photometric_interpretation, window_center, window_width FROM studies"
        " WHERE study_id = %s", (study,))
    assert photometric == "MONOCHROME1"
    await page.locator("#stage").focus()
    await page.keyboard.press("l")
    lung = round(center + 0.12 * width)
    await wait_for_js(page, f"window.__rc.window && Math.round(window.__rc.window.center) === {lung}")
    await page.keyboard.press("b")
    await wait_for_js(page, f"Math.round(window.__rc.window.center) === {round(center - 0.3 * width)}")
