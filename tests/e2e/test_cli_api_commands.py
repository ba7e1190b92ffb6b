"""The curator's command line against the whole running system: `radcurate users add|list|revoke`,
`sample`, `adjudicate`, `release` (thin clients of the gateway API: effect and exit code), a panel
with a human seat whose simulated seats `simulate-readers` fills, and the demo's reading session."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from radcurate.cli import app as cli
from radcurate.client import Gateway, GatewayError
from radcurate.demo import ingest_folder
from radcurate.reading_session import load_panel, open_reading_session
from radcurate.simulate import load_truth
from radcurate.synth import synth_cxr
from tests.e2e.conftest import eventually, query

pytestmark = pytest.mark.e2e
STUDIES, SAMPLED = 36, 8


async def invoke(args: list[str], env: dict[str, str] | None = None):
    """Run a `radcurate` command as a user would (its own event loop, so off this one)."""
    return await asyncio.to_thread(CliRunner().invoke, cli, args, env=env)


async def _funnel(api: Gateway, key: str) -> int:
    return (await api.progress())["funnel"][key]


async def test_curator_commands_run_a_small_campaign_with_a_human_seat(stack, tmp_path):
    state = ["--state-dir", stack["state_dir"]]
    data = tmp_path / "synth"
    synth_cxr(STUDIES, 5, data)
    await ingest_folder(stack, data)
    api = Gateway(stack["gateway_url"], stack["admin_token"])
    try:
        await eventually(lambda: _suggested_all(api), "suggestions")
        await check_users(stack, api, state)
        human = await check_human_seat_panel(stack, api, state, data)
        decided = await check_adjudicate(stack, api, state, human)
        await check_release(stack, state, tmp_path, decided)
        await check_reading_session(stack, api, data)
    finally:
        await api.aclose()


async def _suggested_all(api: Gateway) -> bool:
    return await _funnel(api, "suggested") >= STUDIES


async def check_users(stack, api: Gateway, state: list[str]) -> None:
    added = await invoke(["users", "add", "alice", "--role", "reviewer", "--name", "Alice", *state])
    assert added.exit_code == 0, added.output
    token = added.stdout.strip()
    assert token.startswith("rc_") and "shown only this once" in added.stderr
    assert (await api.as_user(token).request("GET", "/api/v1/me")).json()["user_id"] == "alice"

    # --gateway/--token from the environment: a curator may not create an admin (403 → exit 1)
    curator = (await invoke(["users", "add", "cur", "--role", "curator", *state])).stdout.strip()
    env = {"RADCURATE_GATEWAY_URL": stack["gateway_url"], "RADCURATE_TOKEN": curator}
    refused = await invoke(["users", "add", "boss", "--role", "admin", "--state-dir", "/nonexistent"], env=env)
    assert refused.exit_code == 1 and "HTTP 403" in refused.stderr and "only an admin" in refused.stderr
    assert query(stack, "gateway", "SELECT count(*) FROM users WHERE user_id = 'boss'") == [(0,)]
    again = await invoke(["users", "add", "alice", *state])
    assert again.exit_code == 1 and "HTTP 409" in again.stderr

    listed = await invoke(["users", "list", "--role", "reviewer", "--json", *state])
    assert listed.exit_code == 0, listed.output
    assert {"user_id": "alice", "display_name": "Alice", "role": "reviewer"} in json.loads(listed.stdout)
    table = await invoke(["users", "list", *state])
    rows = {line.split()[0]: line.split()[1] for line in table.stdout.splitlines()[1:]}
    assert rows["alice"] == "reviewer" and rows["cur"] == "curator" and rows["admin"] == "admin"

    revoked = await invoke(["users", "revoke", "alice", *state])
    assert revoked.exit_code == 0 and "revoked alice" in revoked.stdout
    with pytest.raises(GatewayError) as err:
        await api.as_user(token).request("GET", "/api/v1/me")
    assert err.value.status == 401
    twice = await invoke(["users", "revoke", "alice", *state])
    assert twice.exit_code == 1 and "no active user 'alice'" in twice.stderr
    assert "alice" not in (await invoke(["users", "list", *state])).stdout


async def check_human_seat_panel(stack, api: Gateway, state: list[str], data) -> Gateway:
    """A panel of one human and two simulated readers: simulate-readers fills only the simulated seats."""
    human = api.as_user((await invoke(["users", "add", "human", *state])).stdout.strip())
    truth = ["--truth", str(data / "truth.jsonl")]
    registered = await invoke(["simulate-readers", "--readers", "2", *truth, *state])
    assert registered.exit_code == 0 and "cast 0 votes" in registered.stdout, registered.output

    bad = await invoke(["sample", "--n", "4", "--panel", "human,nobody", "--readers-per-study", "2", *state])
    assert bad.exit_code == 1 and "not active reviewers: nobody" in bad.stderr
    assert await _funnel(api, "sampled") == 0
    sampled = await invoke(["sample", "--n", str(SAMPLED), "--readers-per-study", "3", "--seed", "1",
                            "--panel", "human,reader-01,reader-02", "--wait", *state])
    assert sampled.exit_code == 0, sampled.output
    assert f"completed, {SAMPLED} of a pool of {STUDIES} sampled" in sampled.stdout

    filled = await invoke(["simulate-readers", *truth, *state])
    assert filled.exit_code == 0, filled.output
    assert f"cast {2 * SAMPLED} votes" in filled.stdout
    assert len(await human.worklist("open")) == SAMPLED  # the human's seat is untouched
    assert query(stack, "gateway", "SELECT DISTINCT reader_id FROM votes ORDER BY 1") == [("reader-01",),
                                                                                          ("reader-02",)]
    while (a := await human.next_assignment()) is not None:
        await human.vote(a["assignment_id"], {"verdict": "agree_all", "seconds_spent": 20, "confirm": True})
    await eventually(lambda: _decided(api, SAMPLED), "decisions")
    return human


async def _decided(api: Gateway, n: int) -> bool:
    return await _funnel(api, "decided") >= n


async def check_adjudicate(stack, api: Gateway, state: list[str], human: Gateway) -> list[str]:
    decided = [r[0] for r in query(stack, "gateway", "SELECT study_id FROM decisions ORDER BY study_id")]
    study = decided[0]
    missing = await invoke(["adjudicate", "no-such-study", "--reject", *state])
    assert missing.exit_code == 1 and "no decision to adjudicate" in missing.stderr
    usage = await invoke(["adjudicate", study, *state])
    assert usage.exit_code == 2 and "--accept or --reject" in usage.stderr
    ruled = await invoke(["adjudicate", study, "--accept", "--label", "cardiomegaly", "--note", "cli", *state])
    assert ruled.exit_code == 0, ruled.output
    await eventually(lambda: query(stack, "gateway", "SELECT rule, labels FROM decisions WHERE study_id = %s",
                                   (study,)) == [("curator-adjudication", ["cardiomegaly"])], "the ruling")
    return decided


async def check_release(stack, state: list[str], tmp_path, decided: list[str]) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"target_size": 2, "min_per_label": 0, "seed": 1}))
    out = await invoke(["release", "--id", "cli-r1", "--plan", str(plan), "--wait", "--timeout", "90", "--json",
                        *state])
    assert out.exit_code == 0, out.output
    body = json.loads(out.stdout)
    assert body["status"] == "released" and body["released_count"] + body["holdout_count"] == 2
    again = await invoke(["release", "--id", "cli-r1", *state])
    assert again.exit_code == 1 and "HTTP 409" in again.stderr and "already exists" in again.stderr
    bad_plan = tmp_path / "bad.json"
    bad_plan.write_text("[1, 2]")
    refused = await invoke(["release", "--plan", str(bad_plan), *state])
    assert refused.exit_code == 2 and "not a JSON object" in refused.stderr
    assert query(stack, "gateway", "SELECT count(*) FROM releases") == [(1,)]


async def check_reading_session(stack, api: Gateway, data) -> None:
    """What `demo --keep-running` hands a newcomer: a token whose worklist waits, the other seats read."""
    simulated = load_panel(stack["state_dir"])
    session = await open_reading_session(api, simulated, load_truth(data / "truth.jsonl"), studies=5, seed=9)
    assert session is not None and session.studies == 5 and session.user_id == "you"
    assert session.simulated == ("reader-01", "reader-02") and session.simulated_votes == 10
    you = api.as_user(session.token)
    open_reads = await you.worklist("open")
    assert len(open_reads) == 5
    text = "\n".join(session.instructions(stack["state_dir"]))
    assert session.token in text and f"{stack['gateway_url']}/" in text
    # the simulated seats of those studies are already voted; the human's are not
    study_ids = tuple(a["study_id"] for a in open_reads)
    assert query(stack, "gateway", "SELECT count(*) FROM votes WHERE study_id = ANY(%s)", (list(study_ids),)) == [(10,)]


async def test_swagger_ui_authorises_with_a_bearer_token_and_calls_the_api(stack, browser):
    """/docs in real Chromium: Authorize with a token, then "Try it out" on GET /api/v1/me."""
    page = await browser.new_page()
    await page.goto(f"{stack['gateway_url']}/docs")
    await page.click("button.authorize")
    await page.fill(".modal-ux input", stack["admin_token"])
    await page.click(".modal-ux .auth-btn-wrapper button.authorize")
    await page.click(".modal-ux button.btn-done")
    operation = page.locator("#operations-users-me_api_v1_me_get")
    await operation.locator(".opblock-summary").click()
    await operation.locator("button.try-out__btn").click()
    await operation.locator("button.execute").click()
    responses = operation.locator(".live-responses-table")
    await responses.locator(".response-col_status").first.wait_for()
    text = await responses.inner_text()
    assert "200" in text and '"user_id": "admin"' in text and '"role": "admin"' in text
