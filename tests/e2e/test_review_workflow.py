"""The review workflow over HTTP with all five services: blind first read, the discussion after
one's own vote, omission safeguards, sampling-run outcomes, leases and reassignment; and the
reviewer web page in real headless Chromium (last: it samples from what the others left)."""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlsplit

import httpx
import pytest

from radcurate.client import Gateway, GatewayError
from tests.e2e.conftest import eventually, query, scalar, wait_for_js
from tests.e2e.test_bad_input import assert_problem, ingest_http
from tests.e2e.test_http_hardening import headers, raw_request
from tests.support.factories import dicom_bytes

pytestmark = pytest.mark.e2e
KNOWN_STUDIES: list[str] = []  # every study this module ingests (exclusions must name them all)


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
                "verdict": "agree_mostly", "removed_labels": positive[:1]}), 409, "please confirm")
            assert ask["confirmations"][0]["label_id"] == positive[0]
            assert scalar(stack, "gateway", "SELECT count(*) FROM votes") == votes_before
            body = {"verdict": "agree_mostly", "removed_labels": positive[:1], "confirm": True}
        else:
            body = {"verdict": "agree_all", "confirm": True}
        voted = await client.post(f"/api/v1/reviews/{a1['assignment_id']}/vote", headers=auth, json=body)
        assert voted.status_code == 201
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


async def test_next_and_vote_answer_alike_on_the_fast_path_and_through_fastapi(stack, admin, tmp_path):
    """`GET /reviews/next` and the vote are served by plain ASGI routes (services/gateway/api/
    hot_routes.py) that hand anything irregular to the FastAPI route. A second, identical
    Authorization header is such a request: the same call both ways must answer byte for byte
    alike, headers included, and refusals must stay FastAPI's."""
    me, _ = await _setup(stack, admin, tmp_path, "HOT", ["hot-1", "hot-2", "hot-3"],
                         {"n": 1, "readers_per_study": 3, "seed": 4})

    async def both(method: str, path: str, token: str, **kw) -> tuple[httpx.Response, httpx.Response]:
        one = [("authorization", f"Bearer {token}"), *kw.pop("headers", [])]
        async with httpx.AsyncClient(base_url=stack["gateway_url"]) as client:
            fast = await client.request(method, path, headers=one, **kw)
            slow = await client.request(method, path, headers=[one[0], *one], **kw)
        return fast, slow

    def alike(fast: httpx.Response, slow: httpx.Response) -> None:
        assert fast.status_code == slow.status_code and fast.content == slow.content, (fast.text, slow.text)
        assert [(k, v) for k, v in fast.headers.multi_items() if k != "date"] == [
            (k, v) for k, v in slow.headers.multi_items() if k != "date"]

    hot1 = me["hot-1"].token
    fast, slow = await both("GET", "/api/v1/reviews/next", hot1)
    alike(fast, slow)
    assert fast.status_code == 200 and fast.json()["study_id"] in KNOWN_STUDIES  # its one study (n=1)
    assignment = fast.json()["assignment_id"]
    fast, slow = await both("GET", "/api/v1/reviews/next", hot1, params=[("after", assignment)])
    alike(fast, slow)
    assert fast.status_code == 204 and fast.content == b""
    assert_problem((await both("GET", "/api/v1/reviews/next", hot1, params=[("after", "x")] * 9))[0], 422, "at most 8")
    assert_problem((await both("GET", "/api/v1/reviews/next", stack["admin_token"]))[0], 403, "role reviewer")

    path, key = f"/api/v1/reviews/{assignment}/vote", [("idempotency-key", f"k-{assignment}")]
    vote = {"verdict": "agree_all", "confirm": True, "seconds_spent": 20, "comment": "clear ✓"}
    first = (await both("POST", path, hot1, json=vote, headers=key))[0]
    assert first.status_code == 201 and first.json()["verdict"] == "agree_all"
    fast, slow = await both("POST", path, hot1, json=vote, headers=key)  # retries: the original vote, 200
    alike(fast, slow)
    assert fast.status_code == 200 and fast.content == first.content
    fast, slow = await both("POST", path, hot1, json=vote)  # no key: a second vote is refused
    alike(fast, slow)
    assert_problem(fast, 409, "already voted")
    fast, slow = await both("POST", path, hot1, json={"verdict": "maybe"})
    alike(fast, slow)
    assert_problem(fast, 422, "body.verdict")
    fast, slow = await both("POST", path, hot1, content=b"{not json", headers=[("content-type", "application/json")])
    alike(fast, slow)
    assert fast.status_code == 422

    # The fast path checks the token and bounds the body itself, before reading it: refused alike.
    fast, slow = await both("GET", "/api/v1/reviews/next", "rc_not-a-token")
    alike(fast, slow)
    assert_problem(fast, 401, "not valid")
    host = urlsplit(stack["gateway_url"]).netloc
    for token, refused in (("rc_forged", 401), (hot1, 413)):  # a 2 GB body declared, never sent
        status, answer = raw_request(stack["gateway_url"], headers(path, host, token, Content_Length=str(2 ** 31)))
        assert status == refused and answer["status"] == refused, answer

    async def chunks():  # no Content-Length: handed to the full chain, which bounds it as it streams
        yield json.dumps(vote).encode()

    async with httpx.AsyncClient(base_url=stack["gateway_url"]) as client:
        streamed = await client.post(path, content=chunks(), headers={
            "authorization": f"Bearer {hot1}", "content-type": "application/json", **dict(key)})
    assert streamed.status_code == 200 and streamed.content == first.content

    # A request the fast path serves is counted under the FastAPI route's template, as the chain counts it.
    def served(status: int) -> float:
        series = ('radcurate_http_requests_total{method="POST",route="/api/v1/reviews/{assignment_id}/vote",'
                  f'service="gateway",status="{status}"}} ')
        lines = [ln for ln in httpx.get(f"{stack['gateway_url']}/metrics").text.splitlines() if ln.startswith(series)]
        return float(lines[0].split()[-1]) if lines else 0.0

    before = served(409)
    async with httpx.AsyncClient(base_url=stack["gateway_url"]) as client:
        again = await client.post(path, json=vote, headers={"authorization": f"Bearer {hot1}"})
    assert_problem(again, 409, "already voted")
    assert served(409) == before + 1


async def test_a_vote_asked_for_the_next_read_answers_with_it_alike_both_ways(stack, admin, tmp_path):
    """`POST .../vote?next=true`: the vote as recorded plus `next_assignment`, the read `GET /next`
    would answer (null when none is left), on the fast path and through FastAPI alike; the plain
    vote's answer is unchanged, and a refused vote opens nothing."""
    me, _ = await _setup(stack, admin, tmp_path, "NXT", ["nx-1", "nx-2", "nx-3"],
                         {"n": 2, "readers_per_study": 3, "seed": 5})
    token = me["nx-1"].token
    auth = [("authorization", f"Bearer {token}")]
    vote = {"verdict": "agree_all", "confirm": True, "seconds_spent": 20}
    async with httpx.AsyncClient(base_url=stack["gateway_url"]) as client:
        first = (await client.get("/api/v1/reviews/next", headers=auth)).json()
        path = f"/api/v1/reviews/{first['assignment_id']}/vote"
        refused = await client.post(path, params={"next": "true"}, json={"verdict": "maybe"}, headers=auth)
        assert_problem(refused, 422, "body.verdict")
        assert scalar(stack, "gateway", "SELECT count(*) FROM assignments WHERE reader_id = 'nx-1'"
                      " AND opened_at IS NOT NULL") == 1  # the refused vote opened nothing
        assert_problem(await client.post(path, params={"next": "maybe"}, json=vote, headers=auth), 422, "next")
        key = [("idempotency-key", f"k-{first['assignment_id']}")]
        voted = await client.post(path, params={"next": "true"}, json=vote, headers=auth + key)
        assert voted.status_code == 201, voted.text
        following = voted.json()["next_assignment"]
        assert following["assignment_id"] != first["assignment_id"] and following["study_id"] in KNOWN_STUDIES
        # What GET /next answers now, byte for byte as its JSON; the vote as a plain vote records it.
        assert (await client.get("/api/v1/reviews/next", headers=auth)).json() == following
        assert {k: v for k, v in voted.json().items() if k != "next_assignment"} == (await client.post(
            path, json=vote, headers=auth + key)).json()  # the retry without next: the plain answer
        # A retry through FastAPI (two Authorization headers) with next: the original vote, the same next.
        again = await client.post(path, params={"next": "1"}, json=vote, headers=[auth[0], *auth, *key])
        assert again.status_code == 200 and again.json() == voted.json()
        last = await client.post(f"/api/v1/reviews/{following['assignment_id']}/vote?next=true", json=vote,
                                 headers=auth)
        assert last.status_code == 201 and last.json()["next_assignment"] is None  # nothing left to read
        slow = await client.post(f"/api/v1/reviews/{following['assignment_id']}/vote?next=true", json=vote,
                                 headers=[auth[0], *auth])
        assert_problem(slow, 409, "already voted")
    stored = query(stack, "gateway", "SELECT assignment_id FROM votes WHERE reader_id = 'nx-1'")
    assert sorted(r[0] for r in stored) == sorted([first["assignment_id"], following["assignment_id"]])


# --- the reviewer web page ----------------------------------------------------------------

async def _reader_with_work(stack, tmp_path, prefix: str = "PAGE", readers: tuple[str, ...] = ("pg-1", "pg-2", "pg-3"),
                            ) -> tuple[str, Gateway]:
    """Three fresh studies and a fresh panel; returns the first reader's token once two reads wait."""
    admin = Gateway(stack["gateway_url"], stack["admin_token"])
    for i in range(3):
        await ingest_http(stack, f"{prefix}-{i}", dicom_bytes(tmp_path, f"{prefix}-{i}", seed=i))
    tokens = {r: await admin.create_user(r, "reviewer") for r in readers}
    await eventually(lambda: _all_suggested(admin), "suggestions")
    await admin.request_sampling({"n": 2, "readers_per_study": 3, "seed": 0}, panel=sorted(tokens))
    reader = admin.as_user(tokens[readers[0]])
    await eventually(lambda: _has_work(reader), f"assignments for {readers[0]}")
    return tokens[readers[0]], admin


def _refused_requests(page) -> list[str]:
    """Every API request the page makes that the gateway refuses as malformed (422): the page and
    the API's request shapes must agree, and an unknown field is refused, never ignored."""
    refused: list[str] = []

    async def check(response) -> None:
        if "/api/" in response.url and response.status == 422:
            refused.append(f"{response.request.method} {response.url}: {await response.text()}")

    page.on("response", check)
    return refused


async def _sign_in(page, stack, token: str) -> None:
    await page.goto(stack["gateway_url"] + "/")
    await page.evaluate("window.__rc.graceMs = 300")  # votes are held back for undo: not 10 s here
    await page.get_by_label("Your access token").fill(token)
    await page.get_by_role("button", name="Sign in").click()
    await wait_for_js(page, "window.__rc && window.__rc.ready")


async def _has_work(reader: Gateway) -> bool:
    return len(await reader.worklist()) == 2


@pytest.mark.browser
async def test_a_reader_signs_in_votes_with_the_keyboard_and_only_then_sees_the_discussion(stack, browser, tmp_path):
    token, admin = await _reader_with_work(stack, tmp_path)
    page = await browser.new_page(viewport={"width": 1600, "height": 1000})
    refused = _refused_requests(page)
    await _sign_in(page, stack, token)
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
    assert await page.locator("#study-title").inner_text() != first  # the prefetched study is on screen
    assert await page.locator("#discussion").is_hidden()  # not under the next study...
    await page.keyboard.press("d")  # ...but on request, titled with the study it discusses
    await page.locator("#discussion").wait_for(state="visible")
    assert first.removeprefix("Study ") in await page.locator("#discussion-title").inner_text()
    assert "pg-1: agree all" in await page.locator("#discussion-votes").inner_text()
    await page.fill("#post-body", "looks right to me")
    await page.get_by_role("button", name="Post").click()
    await page.locator("#discussion-posts", has_text="looks right to me").wait_for()
    assert refused == []
    await admin.aclose()


@pytest.mark.browser
async def test_labels_a_reader_adds_and_removes_on_the_page_are_stored_with_the_vote(stack, browser, tmp_path):
    token, admin = await _reader_with_work(stack, tmp_path, "FIX", ("fx-1", "fx-2", "fx-3"))
    page = await browser.new_page(viewport={"width": 1600, "height": 1000})
    refused = _refused_requests(page)
    await _sign_in(page, stack, token)

    # First study: the report states consolidation and an effusion; the reader disagrees —
    # consolidation is wrong, and a pneumothorax was missed.
    first = (await page.locator("#study-title").inner_text()).removeprefix("Study ")
    await page.locator("#suggested input[value='consolidation']").uncheck()
    await page.locator("#add-box summary").click()
    await page.locator("#addable input[value='pneumothorax']").check()
    await page.keyboard.press("3")
    await page.locator("#confirm").wait_for(state="visible")  # removing a stated finding asks first
    await page.locator("#confirm-ok").click()
    await wait_for_js(page, "window.__rc.votes === 1")

    # Second study: mostly right, one label added.
    second = (await page.locator("#study-title").inner_text()).removeprefix("Study ")
    assert second != first
    await page.locator("#add-box summary").click()
    await page.locator("#addable input[value='cardiomegaly']").check()
    await page.keyboard.press("2")
    await wait_for_js(page, "window.__rc.votes === 2")

    stored = {r[0]: r[1:] for r in query(
        stack, "gateway", "SELECT study_id, judgement->>'verdict', judgement->'added_labels',"
        " judgement->'removed_labels', confirmed_omissions <> '[]'::jsonb FROM votes WHERE reader_id = %s", ("fx-1",))}
    assert stored[first] == ("disagree", ["pneumothorax"], ["consolidation"], True)
    assert stored[second] == ("agree_mostly", ["cardiomegaly"], [], False)
    await page.get_by_role("button", name=f"Discuss {second}").click()
    await page.locator("#discussion-votes", has_text="+cardiomegaly").wait_for()
    # The worklist is done: no study panel controls that look live.
    assert await page.locator("#study-title").inner_text() == "Nothing left to read"
    assert await page.locator(".verdicts").is_hidden() and await page.locator("#suggested li").count() == 0
    assert refused == []
    await admin.aclose()


@pytest.mark.browser
async def test_enter_in_the_omission_check_goes_back_and_sign_out_leaves_nothing_of_the_reader(
        stack, browser, tmp_path):
    token, admin = await _reader_with_work(stack, tmp_path, "OUT", ("so-1", "so-2", "so-3"))
    page = await browser.new_page(viewport={"width": 1600, "height": 1000})
    await page.goto(stack["gateway_url"] + "/")
    assert await page.locator("#app").is_hidden() and await page.locator("#login").is_visible()
    await _sign_in(page, stack, token)
    study = await page.locator("#study-title").inner_text()

    await page.locator("#suggested input[value='consolidation']").uncheck()
    await page.keyboard.press("2")  # one correction: agree mostly (issue 12 §2)
    await page.locator("#confirm").wait_for(state="visible")
    await page.keyboard.press("Enter")  # the safety check's default is "go back"
    await page.locator("#confirm").wait_for(state="hidden")
    assert await page.locator("#study-title").inner_text() == study
    assert query(stack, "gateway", "SELECT count(*) FROM votes WHERE reader_id = 'so-1'")[0][0] == 0

    await page.keyboard.press("?")
    await page.locator("#shortcuts").wait_for(state="visible")
    assert "Agree all" in await page.locator("#shortcuts").inner_text()
    await page.keyboard.press("Escape")

    await page.get_by_role("button", name="Sign out").click()
    assert await page.locator("#login").is_visible() and await page.locator("#app").is_hidden()
    assert await page.locator("#token").input_value() == ""
    assert await page.evaluate("sessionStorage.getItem('radcurate.token')") is None
    assert await page.locator("#todo li").count() == 0 and await page.locator("#suggested li").count() == 0
    assert await page.locator("#study-title").inner_text() == ""
    assert await page.evaluate("document.getElementById('image').getAttribute('src')") is None
    await admin.aclose()
