"""The review workflow over HTTP with all five services: blind first read, the discussion after
one's own vote, omission safeguards, sampling-run outcomes, leases and reassignment; and the
reviewer web page in real headless Chromium (last: it samples from what the others left)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from radcurate.client import Gateway, GatewayError
from tests.e2e.conftest import eventually, scalar, wait_for_js
from tests.e2e.test_bad_input import assert_problem, ingest_http
from tests.support.factories import dicom_bytes

pytestmark = pytest.mark.e2e
KNOWN_STUDIES: list[str] = []  # every study this module ingests (exclusions must name them all)


@pytest.fixture
async def admin(stack):
    api = Gateway(stack["gateway_url"], stack["admin_token"])
    yield api
    await api.aclose()


async def _setup(stack, admin: Gateway, tmp_path, prefix: str, readers: list[str], plan: dict,
                 n_studies: int = 2, **extra) -> tuple[dict[str, Gateway], str]:
    """Ingest studies, register readers, sample; returns each reader's client and the run id."""
    for i in range(n_studies):
        sid = f"{prefix}-{i}"
        KNOWN_STUDIES.append(sid)
        assert (await ingest_http(stack, sid, dicom_bytes(tmp_path, sid, seed=i))).status_code in (200, 201)
    tokens = {r: await admin.create_user(r, "reviewer") for r in readers}
    await eventually(lambda: _all_suggested(admin), "suggestions")
    body = {"plan": plan, "panel": readers, **extra}
    run = (await admin.request("POST", "/api/v1/sampling-runs", json=body)).json()
    await eventually(lambda: _run_done(admin, run["run_id"]), "the sampling run's outcome")
    return {r: admin.as_user(t) for r, t in tokens.items()}, run["run_id"]


async def _all_suggested(api: Gateway) -> bool:
    f = (await api.progress())["funnel"]
    return f["suggested"] >= f["ingested"]


async def _run_done(api: Gateway, run_id: str) -> bool:
    """The outcome (sampling-completed) and the studies (review-assigned) arrive on different
    topics: the read model is complete when both are in."""
    run = await api.sampling_run(run_id)
    return run["status"] != "requested" and len(run["studies"]) == (run.get("n_selected") or 0)


async def _status(coro) -> int:
    try:
        await coro
    except GatewayError as exc:
        return exc.status
    return 200


async def test_readers_vote_blind_then_discuss_and_omissions_need_confirming(stack, admin, tmp_path):
    readers = ["bl-1", "bl-2", "bl-3"]
    me, run_id = await _setup(stack, admin, tmp_path, "BLIND", readers, {"n": 1, "readers_per_study": 3, "seed": 2})
    run = await admin.sampling_run(run_id)
    assert run["status"] == "completed" and run["n_selected"] == 1 and sum(run["tiers"].values()) == 1
    assert any("wanted 25" in q for q in run["unmet_quotas"]), run["unmet_quotas"]
    assert run["studies"][0]["reason"]
    a1 = await me["bl-1"].next_assignment()
    a2 = await me["bl-2"].next_assignment()
    sid = a1["study_id"]
    view = await me["bl-1"].study(sid)
    assert view["report_text"] and view["assignment_id"] == a1["assignment_id"] and "votes" not in view
    assert all(e in view["evidence_sentences"] for s in view["suggested"] for e in s["evidence"])

    await me["bl-2"].vote(a2["assignment_id"], {"verdict": "agree_all", "comment": "clear consolidation"})
    async with httpx.AsyncClient(base_url=stack["gateway_url"]) as client:
        auth = {"Authorization": f"Bearer {me['bl-1'].token}"}
        url = f"/api/v1/studies/{sid}/discussion"
        assert_problem(await client.get(url, headers=auth), 403, "after your own vote")
        assert_problem(await client.post(url, headers=auth, json={"body": "peek"}), 403, "after your own vote")
        worklist = (await client.get("/api/v1/reviews?state=open", headers=auth)).text
        assert "clear consolidation" not in worklist and "clear consolidation" not in str(view)
        positive = [s["label_id"] for s in a1["suggested"] if not s["uncertain"]]
        if positive:
            votes_before = scalar(stack, "gateway", "SELECT count(*) FROM votes")
            vote_url = f"/api/v1/reviews/{a1['assignment_id']}/vote"
            ask = assert_problem(await client.post(vote_url, headers=auth, json={
                "verdict": "disagree", "removed_labels": positive[:1]}), 409, "please confirm")
            assert ask["confirmations"][0]["label_id"] == positive[0]
            assert scalar(stack, "gateway", "SELECT count(*) FROM votes") == votes_before
            body = {"verdict": "disagree", "removed_labels": positive[:1], "confirm": True}
        else:
            body = {"verdict": "agree_all", "confirm": True}
        assert (await client.post(f"/api/v1/reviews/{a1['assignment_id']}/vote", headers=auth, json=body)).status_code == 201
        assert_problem(await client.post(url, headers=auth, json={"body": "   "}), 422, "empty")

    thread = await me["bl-1"].discussion(sid)
    assert {v["reader_id"] for v in thread["votes"]} == {"bl-1", "bl-2"}
    await me["bl-1"].post_discussion(sid, "I read it as atelectasis instead")
    assert [p["body"] for p in (await me["bl-2"].discussion(sid))["posts"]] == ["I read it as atelectasis instead"]
    assert await _status(me["bl-3"].discussion(sid)) == 403
    assert len((await admin.discussion(sid))["votes"]) == 2
    outsider = admin.as_user(await admin.create_user("bl-outsider", "reviewer"))
    assert await _status(outsider.discussion(sid)) == 404
    assert await _status(outsider.study(sid)) == 404

    states = {s["study_id"]: s for s in await admin.study_states()}
    assert states[sid]["state"] == "in_review" and states[sid]["votes"] == 2
    per_reader = {r["reader_id"]: r for r in (await admin.progress())["readers"]}
    assert per_reader["bl-1"]["done"] == 1 and per_reader["bl-1"]["mean_seconds"] is not None
    assert per_reader["bl-3"]["open"] == 1


async def test_an_unvoted_read_moves_after_its_lease_to_an_eligible_reader_only(stack, admin, tmp_path):
    readers = ["ls-1", "ls-2", "ls-3", "ls-4", "ls-5"]
    extra = {"capacity": {"ls-3": 0}, "exclusions": {"ls-4": KNOWN_STUDIES + ["LEASE-0", "LEASE-1"]}}
    me, _ = await _setup(stack, admin, tmp_path, "LEASE", readers,
                         {"n": 1, "readers_per_study": 2, "seed": 1, "lease_seconds": 4}, **extra)
    first = {r: a for r in readers if (a := await me[r].next_assignment())}
    assert len(first) == 2 and not {"ls-3", "ls-4"} & set(first)
    voter, idle = sorted(first)
    sid = first[voter]["study_id"]
    await me[voter].vote(first[voter]["assignment_id"], {"verdict": "agree_all", "confirm": True})
    (successor,) = set(readers) - {"ls-3", "ls-4", voter, idle}

    await eventually(lambda: me[successor].next_assignment(), "the read to move to the eligible reader", 30)
    assert (await me[successor].next_assignment())["study_id"] == sid
    assert await me[idle].next_assignment() is None
    assert await _status(me[idle].vote(first[idle]["assignment_id"], {"verdict": "agree_all"})) == 409
    assert await _status(me[idle].study(sid)) == 404
    states = {s["study_id"]: s for s in await admin.study_states()}
    assert {r["reader_id"]: r["status"] for r in states[sid]["readers"]} == {
        voter: "voted", idle: "expired", successor: "open"}
    # Nobody else is eligible, so the successor keeps the read past its own lease.
    await eventually(lambda: _lease_extended(stack, sid, successor), "the successor's lease to be extended", 30)
    assert scalar(stack, "sampler", "SELECT count(*) FROM leases WHERE study_id = %s", (sid,)) == 3


def _lease_extended(stack, sid: str, reader: str) -> bool:
    return scalar(stack, "sampler", "SELECT count(*) FROM leases WHERE study_id = %s AND reader_id = %s"
                  " AND status = 'open' AND lease_until > assigned_at + interval '5 seconds'", (sid, reader)) == 1


async def test_a_curator_moves_an_open_read_and_bad_moves_are_refused(stack, admin, tmp_path):
    readers = ["ra-1", "ra-2", "ra-3"]
    me, _ = await _setup(stack, admin, tmp_path, "MOVE", readers, {"n": 1, "readers_per_study": 2, "seed": 3})
    first = {r: a for r in readers if (a := await me[r].next_assignment())}
    holder, other = sorted(first)
    (free,) = set(readers) - set(first)
    assignment = first[holder]["assignment_id"]
    assert await _status(admin.reassign(f"no-such-{uuid.uuid4().hex}")) == 404
    assert await _status(admin.reassign(assignment, to_reader="admin")) == 422
    assert await _status(admin.reassign(assignment, to_reader=other)) == 422
    assert await _status(me[holder].reassign(assignment)) == 403
    await me[other].vote(first[other]["assignment_id"], {"verdict": "agree_all", "confirm": True})
    assert await _status(admin.reassign(first[other]["assignment_id"])) == 409

    await admin.reassign(assignment, reason="on leave")
    await eventually(lambda: me[free].next_assignment(), "the moved read on the free reader's worklist", 30)
    assert await me[holder].next_assignment() is None


# --- the reviewer web page ----------------------------------------------------------------

async def _reader_with_work(stack, tmp_path) -> tuple[str, Gateway]:
    admin = Gateway(stack["gateway_url"], stack["admin_token"])
    for i in range(3):
        await ingest_http(stack, f"PAGE-{i}", dicom_bytes(tmp_path, f"PAGE-{i}", seed=i))
    tokens = {r: await admin.create_user(r, "reviewer") for r in ("pg-1", "pg-2", "pg-3")}
    await eventually(lambda: _all_suggested(admin), "suggestions")
    await admin.request_sampling({"n": 2, "readers_per_study": 3, "seed": 0}, panel=sorted(tokens))
    reader = admin.as_user(tokens["pg-1"])
    await eventually(lambda: _has_work(reader), "assignments for pg-1")
    return tokens["pg-1"], admin


async def _has_work(reader: Gateway) -> bool:
    return len(await reader.worklist()) == 2


@pytest.mark.browser
async def test_a_reader_signs_in_votes_with_the_keyboard_and_only_then_sees_the_discussion(stack, browser, tmp_path):
    token, admin = await _reader_with_work(stack, tmp_path)
    page = await browser.new_page(viewport={"width": 1600, "height": 1000})
    await page.goto(stack["gateway_url"] + "/")
    await page.get_by_label("Your access token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await wait_for_js(page, "window.__rc && window.__rc.ready")
    first = await page.locator("#study-title").inner_text()
    assert first.startswith("Study ")
    assert await page.locator("#discussion").is_hidden()
    assert await page.evaluate("document.getElementById('image').naturalWidth") > 0
    assert await page.evaluate("sessionStorage.getItem('radcurate.token')") == token

    page.on("dialog", lambda d: d.accept())
    await page.keyboard.press("1")
    if await page.locator("#confirm").is_visible():  # the study had a finding with no label
        await page.locator("#confirm-ok").click()
    await wait_for_js(page, "window.__rc.votes === 1")
    await page.locator("#discussion").wait_for(state="visible")
    assert "pg-1: agree all" in await page.locator("#discussion-votes").inner_text()
    assert await page.locator("#study-title").inner_text() != first  # the prefetched study is on screen
    await page.fill("#post-body", "looks right to me")
    await page.get_by_role("button", name="Post").click()
    await page.locator("#discussion-posts", has_text="looks right to me").wait_for()
    await admin.aclose()
