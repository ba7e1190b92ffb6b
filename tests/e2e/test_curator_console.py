"""A curator runs a small campaign from the console in real headless Chromium: creates readers,
samples, watches votes arrive, adjudicates a study, releases and downloads the public set; and
rules on a lumbar study's held cells, grade by grade. Each step is checked in what the services
stored, not only on screen."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from radcurate.client import Gateway
from radcurate.demo import ingest_folder
from radcurate.synth.lumbar import synth_lumbar
from services.common.contracts import Protocol
from tests.e2e.conftest import at_least, eventually, query, scalar
from tests.e2e.test_two_view_study import ingest_two_views

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
READERS = ("cc-1", "cc-2", "cc-3")


async def _pool_labelled(admin: Gateway) -> bool:
    f = (await admin.progress())["funnel"]
    return f["suggested"] >= f["ingested"]


async def _console(browser, stack, token: str, tmp_path):
    page = await browser.new_page(viewport={"width": 1500, "height": 1000})
    await page.goto(stack["gateway_url"] + "/console")
    await page.get_by_label("Your access token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await page.locator("#console").wait_for(state="visible")
    return page


async def _create_reader(page, user_id: str) -> str:
    await page.get_by_label("User id").fill(user_id)
    await page.get_by_label("Role").select_option("reviewer")
    await page.get_by_role("button", name="Create and issue token").click()
    await page.locator("#issued-user", has_text=user_id).wait_for()
    return await page.locator("#issued-token").inner_text()


async def test_a_curator_runs_a_small_campaign_from_the_console(stack, browser, tmp_path):
    admin = Gateway(stack["gateway_url"], stack["admin_token"])
    curator_token = await admin.create_user("cc-curator", "curator")
    for i in range(2):  # frontal + lateral studies: the adjudication view shows both
        assert (await ingest_two_views(stack, tmp_path, f"CONSOLE-{i}", seed=10 + i)).status_code == 201
    await eventually(lambda: _pool_labelled(admin), "suggestions for the console's studies")
    page = await _console(browser, stack, curator_token, tmp_path)

    # Readers: three reviewers, each token shown once.
    await page.get_by_role("tab", name="Readers").click()
    tokens = {r: await _create_reader(page, r) for r in READERS}
    assert scalar(stack, "gateway", "SELECT count(*) FROM users WHERE user_id LIKE 'cc-_' AND active") == 3
    await page.locator("#user-table", has_text="cc-3").wait_for()

    # Sampling: a panel of exactly these three, both new studies, three readers each.
    await page.get_by_role("tab", name="Sampling").click()
    await page.locator("#panel-picks input[value='cc-1']").wait_for()
    for box in await page.locator("#panel-picks input").all():
        if await box.get_attribute("value") not in READERS:
            await box.uncheck()
    await page.locator("#plan-n").fill("2")
    await page.locator("#plan-min").fill("0")
    await page.get_by_role("button", name="Request sampling").click()
    await page.locator("#run-detail h3").wait_for()
    run_id = (await page.locator("#run-detail h3").inner_text()).removeprefix("Run ")
    assert query(stack, "gateway", "SELECT panel FROM sampling_runs WHERE run_id = %s",
                 (run_id,))[0][0] == list(READERS)

    # Votes arrive (the readers vote through the API): one study all agree, one all disagree.
    readers = {r: admin.as_user(t) for r, t in tokens.items()}
    await eventually(lambda: _all_have(readers, 2), "two reads for each console reader", 60)
    first = sorted((await readers["cc-1"].worklist()), key=lambda a: a["study_id"])
    agreed, disputed = first[0]["study_id"], first[1]["study_id"]
    for reader in readers.values():
        for a in await reader.worklist():
            verdict = "agree_all" if a["study_id"] == agreed else "disagree"
            # A disagree with no correction states its reason (issue 12 §2).
            reason = "" if verdict == "agree_all" else "not a diagnostic view"
            await reader.vote(a["assignment_id"], {"verdict": verdict, "confirm": True, "comment": reason})
    await page.get_by_role("tab", name="Progress").click()
    await page.locator("#reader-table tr", has_text="cc-3").wait_for()
    await eventually(lambda: _reader_row_done(page, "cc-3"), "the votes on the progress table", 30)

    # Adjudication: the disputed study is in the queue; the curator accepts it with a note.
    await eventually(lambda: _decided(stack, disputed), "the rule's decision on the disputed study")
    await page.get_by_role("tab", name="Adjudication").click()
    await page.get_by_role("button", name=f"{disputed} · 3 reads").click()
    await page.locator("#adj-reads tr", has_text="cc-2").wait_for()
    for image in ("adj-image", "adj-image-lateral"):
        await page.locator(f"#{image}").wait_for(state="visible")
        assert await page.evaluate(f"document.getElementById('{image}').naturalWidth") > 0, image
    await page.get_by_label("Note (why)").fill("the readers missed the stated consolidation")
    await page.get_by_role("button", name="Record ruling").click()
    await page.locator("#console-status", has_text=f"Ruling on {disputed} recorded").wait_for()
    ruling = query(stack, "gateway", "SELECT curator_id, accepted, note FROM adjudications WHERE study_id = %s",
                   (disputed,))
    assert ruling == [("cc-curator", True, "the readers missed the stated consolidation")]
    await eventually(lambda: _accepted(stack, disputed), "the ruling becoming the study's decision")

    # The agreement report as charts: κ per label and the verdict shares of the votes so far.
    await page.get_by_role("tab", name="Agreement").click()
    await page.get_by_role("button", name="Compute agreement report").click()
    await page.locator("#verdict-chart g[data-label='agree_all']").wait_for()
    assert await page.locator("#kappa-chart g").count() >= 12  # one bar (or n/a) per CXR label
    await page.screenshot(path=tmp_path / "console-agreement.png", full_page=True)

    # Release, then download the public set's files.
    await page.get_by_role("tab", name="Releases").click()
    await page.get_by_label("Release id").fill("console-r1")
    await page.get_by_label("Benchmark size").fill("2")
    await page.locator("#rel-min").fill("0")
    # First a preview: what the plan would release, computed by consensus, nothing written.
    releases_before = scalar(stack, "gateway", "SELECT count(*) FROM releases")
    await page.get_by_role("button", name="Preview").click()
    heading = await page.locator("#release-preview h3").inner_text()
    public, holdout = (int(n) for n in re.findall(r"\d+", heading))
    assert public + holdout == 2, heading
    await page.locator("#preview-prevalence tr", has_text="pleural effusion").wait_for()
    assert scalar(stack, "gateway", "SELECT count(*) FROM releases") == releases_before
    await page.get_by_role("button", name="Release", exact=True).click()
    await eventually(lambda: _released(stack, "console-r1"), "the release", 60)
    # the release holds what the preview said (same selection and split, same seed)
    assert query(stack, "gateway", "SELECT released_count, holdout_count FROM releases WHERE release_id = 'console-r1'"
                 ) == [(public, holdout)]
    await page.get_by_role("tab", name="Progress").click()
    await page.get_by_role("tab", name="Releases").click()
    await page.get_by_role("button", name="Files of console-r1").click()
    link = page.get_by_role("link", name="labels.csv", exact=True)
    await link.wait_for()
    async with httpx.AsyncClient() as client:
        labels = (await client.get(await link.get_attribute("href"))).text
    assert labels.splitlines()[0].startswith("study_id")
    assert not await page.get_by_role("link", name="holdout/labels.csv").count()  # never the holdout
    await page.screenshot(path=tmp_path / "console-releases.png", full_page=True)
    await admin.aclose()


async def test_the_console_refuses_a_reviewer_and_the_api_refuses_what_the_page_would_hide(stack, browser, tmp_path):
    admin = Gateway(stack["gateway_url"], stack["admin_token"])
    reviewer = await admin.create_user("cc-nosy", "reviewer")
    page = await browser.new_page()
    await page.goto(stack["gateway_url"] + "/console")
    await page.get_by_label("Your access token").fill(reviewer)
    await page.get_by_role("button", name="Sign in").click()
    await page.locator("#login-error", has_text="for curators").wait_for()
    assert await page.locator("#console").is_hidden()
    async with httpx.AsyncClient(base_url=stack["gateway_url"]) as client:
        resp = await client.get("/api/v1/releases", headers={"Authorization": f"Bearer {reviewer}"})
        assert resp.status_code == 403
        preview = await client.post("/api/v1/releases/preview", json={},
                                    headers={"Authorization": f"Bearer {reviewer}"})
        assert preview.status_code == 403
        # a preview is checked like a release: a plan naming an unknown label is refused, nothing asked
        curator = {"Authorization": f"Bearer {stack['admin_token']}"}
        reports_before = scalar(stack, "gateway", "SELECT count(*) FROM reports")
        bad = await client.post("/api/v1/releases/preview", headers=curator,
                                json={"plan": {"label_bounds": {"not_a_label": {"min": 1}}}})
        assert bad.status_code == 422 and "not_a_label" in bad.json()["detail"], bad.text
        assert scalar(stack, "gateway", "SELECT count(*) FROM reports") == reports_before
    await admin.aclose()


async def _all_have(readers: dict[str, Gateway], n: int) -> bool:
    return [len(await r.worklist()) for r in readers.values()] == [n] * len(readers)


async def _reader_row_done(page, reader: str) -> bool:
    cells = await page.locator("#reader-table tr", has_text=reader).locator("td").all_inner_texts()
    return len(cells) > 3 and cells[3] == "2"


def _decided(stack, study_id: str) -> bool:
    return scalar(stack, "gateway", "SELECT count(*) FROM decisions WHERE study_id = %s", (study_id,)) == 1


def _accepted(stack, study_id: str) -> bool:
    return bool(query(stack, "gateway", "SELECT accepted FROM decisions WHERE study_id = %s", (study_id,))[0][0])


def _released(stack, release_id: str) -> bool:
    rows = query(stack, "gateway", "SELECT status FROM releases WHERE release_id = %s", (release_id,))
    return rows == [("released",)]


# --- lumbar: the held cells of a graded study (issue 12 §3, in the console) -----------------

DISPUTED = "spinal_canal_stenosis_l4_l5"
LUMBAR_READERS = ("cl-1", "cl-2", "cl-3")


async def test_a_curator_grades_a_lumbar_studys_held_cell_in_the_console(stack, browser, tmp_path):
    """Three readers a grade apart each at one cell hold the study; the console shows their grades
    per cell side by side with the rule's, the held cell marked; a grade outside the protocol and
    a cell that does not exist are refused by the API and shown by the form, nothing stored; the
    curator's grade then becomes the study's decision."""
    admin = Gateway(stack["gateway_url"], stack["admin_token"])
    lumbar = Protocol.LUMBAR.value
    synth_lumbar(3, seed=11, out_dir=tmp_path / "lumbar")
    assert (await ingest_folder(stack, tmp_path / "lumbar", protocol=Protocol.LUMBAR)).ingested == 3
    await eventually(lambda: at_least(admin, "suggested", 3, lumbar), "a grade grid for every lumbar study")
    readers = [admin.as_user(await admin.create_user(n, "reviewer")) for n in LUMBAR_READERS]
    await admin.request_sampling({"n": 1, "readers_per_study": 3, "seed": 3}, list(LUMBAR_READERS), lumbar)
    await eventually(lambda: _all_have(dict(zip(LUMBAR_READERS, readers, strict=True)), 1), "one lumbar read each")
    held = (await readers[0].worklist())[0]["study_id"]
    for reader, grade in zip(readers, ("Normal/Mild", "Moderate", "Severe"), strict=True):
        [a] = await reader.worklist()
        grid = [{"cell_id": c["cell_id"], "grade": grade if c["cell_id"] == DISPUTED else c["grade"]}
                for c in a["grading"]]
        await reader.vote(a["assignment_id"], {"grades": grid, "comment": f"{grade} at L4/L5"})
    await eventually(lambda: _decided(stack, held), "the rule's decision on the lumbar study")

    page = await _console(browser, stack, await admin.create_user("cl-curator", "curator"), tmp_path)
    await page.get_by_role("tab", name="Adjudication").click()
    # A decision from before the gateway kept cells (NULL): the page marks the cell whose
    # readers are two grades apart itself.
    [(rule_cells,)] = query(stack, "gateway", "SELECT cells FROM decisions WHERE study_id = %s", (held,))
    query(stack, "gateway", "UPDATE decisions SET cells = NULL WHERE study_id = %s RETURNING study_id", (held,))
    await page.get_by_role("button", name=f"{held} · 3 reads").click()
    row = page.locator("#adj-cells tbody tr.held")
    await row.wait_for()
    assert await row.count() == 1 and await row.get_attribute("data-cell") == DISPUTED
    assert (await row.locator("td").all_inner_texts())[3] == "– · held"
    query(stack, "gateway", "UPDATE decisions SET cells = %s WHERE study_id = %s RETURNING study_id",
          (json.dumps(rule_cells), held))
    await page.get_by_role("button", name=f"{held} · 3 reads").click()
    await page.locator("#adj-cells tbody tr.held", has_text="Moderate · held").wait_for()
    assert await page.locator("#adj-cells tbody tr").count() == 25  # every cell, the held one marked
    assert await row.count() == 1 and await row.get_attribute("data-cell") == DISPUTED
    assert await page.locator("#adj-cells thead th").all_inner_texts() == ["Cell", *LUMBAR_READERS, "Rule", "Ruling"]
    assert (await row.locator("th, td").all_inner_texts())[:5] == [
        DISPUTED.replace("_", " "), "Normal/Mild", "Moderate", "Severe", "Moderate · held"]
    assert await page.locator("#adj-labels-box").is_hidden()  # a grid ruling sets grades, not labels
    await page.screenshot(path=tmp_path / "console-lumbar-adjudication.png", full_page=True)

    # Nothing chosen, then what the page would never offer: each refused, shown, nothing stored.
    await page.get_by_label("Note (why)").fill("severe on the axial")
    await page.get_by_role("button", name="Record ruling").click()
    await page.locator("#adj-error", has_text="Choose a grade for every held cell").wait_for()
    pick = "document.querySelector('#adj-cells select[name=cell-grade]')"
    await page.evaluate(f"{pick}.add(new Option('Very severe', 'Very severe')); {pick}.value = 'Very severe'")
    await page.get_by_role("button", name="Record ruling").click()
    await page.locator("#adj-error", has_text="unknown grade(s) Very severe").wait_for()
    await page.evaluate(f"{pick}.dataset.cell = 'tail_l4_l5'; {pick}.value = 'Severe'")
    await page.get_by_role("button", name="Record ruling").click()
    await page.locator("#adj-error", has_text="unknown cell(s): tail_l4_l5").wait_for()
    assert scalar(stack, "gateway", "SELECT count(*) FROM adjudications WHERE study_id = %s", (held,)) == 0

    await page.evaluate(f"{pick}.dataset.cell = '{DISPUTED}'")
    await page.get_by_label(f"Ruling for {DISPUTED.replace('_', ' ')}").select_option("Severe")
    await page.get_by_role("button", name="Record ruling").click()
    await page.locator("#console-status", has_text=f"Ruling on {held} recorded").wait_for()
    assert await page.locator("#adj-error").inner_text() == ""
    [(curator, accepted, labels, note)] = query(
        stack, "gateway", "SELECT curator_id, accepted, labels, note FROM adjudications WHERE study_id = %s", (held,))
    assert (curator, accepted, note) == ("cl-curator", True, "severe on the axial")
    assert f"{DISPUTED}:Severe" in labels
    await eventually(lambda: _accepted(stack, held), "the ruling becoming the study's decision")
    [(cells,)] = query(stack, "consensus", "SELECT cells FROM adjudications WHERE study_id = %s", (held,))
    ruled = {c["cell_id"]: c for c in cells}
    assert len(cells) == 25 and ruled[DISPUTED]["grade"] == "Severe" and ruled[DISPUTED]["method"] == "adjudicated"
    assert query(stack, "consensus", "SELECT accepted, adjudicator FROM effective_decisions WHERE study_id = %s",
                 (held,)) == [(True, "cl-curator")]
    decision = (await admin.request("GET", f"/api/v1/decisions/{held}")).json()
    assert decision["accepted"] and {c["cell_id"]: c["grade"] for c in decision["cells"]}[DISPUTED] == "Severe"
    await admin.aclose()
