"""From votes to an adjudicated decision, a reproducible release, an agreement report and a scored
holdout evaluation — through all five service processes and the HTTP API."""

from __future__ import annotations

import asyncio
import csv
import io
import json

import httpx
import pytest
from typer.testing import CliRunner

from radcurate.cli import app as cli
from radcurate.client import Gateway, GatewayError
from radcurate.demo import ingest_folder, store_for
from radcurate.simulate import load_truth, register_panel, run_panel
from radcurate.stack import local
from radcurate.synth import synth_cxr
from services.common.protocols.cxr.scoring import METRIC_VERSION, receipt
from tests.e2e.conftest import eventually, query, scalar

pytestmark = pytest.mark.e2e
STUDIES, SAMPLED, TARGET, PER_DAY = 240, 60, 24, 3


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("stack")
    env = {"RADCURATE_GATEWAY_EVALUATIONS_PER_DAY": str(PER_DAY), "RADCURATE_CONSENSUS_EVALUATION_BOOTSTRAP": "200",
           "RADCURATE_CONSENSUS_GAUGE_REFRESH_SECONDS": "1"}
    yield local.up(state_dir, service_env=env)
    local.down(state_dir)


async def invoke(args: list[str]):
    """Run a `radcurate` command as a user would (its own event loop, so off this one)."""
    return await asyncio.to_thread(CliRunner().invoke, cli, args)


async def _progress(api, key, value):
    return (await api.progress())["funnel"][key] >= value


async def _released(api, release_id):
    return (await api.release(release_id))["status"] == "released"


async def run_funnel(stack, tmp_path) -> tuple[Gateway, list]:
    data = tmp_path / "synth"
    synth_cxr(STUDIES, 21, data)
    await ingest_folder(stack, data)
    api = Gateway(stack["gateway_url"], stack["admin_token"])
    await eventually(lambda: _progress(api, "suggested", STUDIES), "suggestions")
    readers = await register_panel(api, 17, seed=4)
    await api.request_sampling({"n": SAMPLED, "readers_per_study": 3, "seed": 2})
    await eventually(lambda: _progress(api, "assignments", 3 * SAMPLED), "assignments")
    await run_panel(api, readers, load_truth(data / "truth.jsonl"))
    await eventually(lambda: _progress(api, "decided", SAMPLED), "decisions")
    return api, readers


async def adjudicate_one(stack, api) -> None:
    """A flagged agree_mostly majority is accepted by a curator: recorded beside the rule's decision."""
    flagged = query(stack, "consensus", "SELECT study_id FROM flags WHERE reason LIKE 'adjudication:%%' ORDER BY 1")
    assert flagged, "the simulated panel should leave some agree_mostly majorities"
    study_id = flagged[0][0]
    resp = await api.request("POST", "/api/v1/adjudications",
                             json={"study_id": study_id, "accepted": True, "labels": ["cardiomegaly"], "note": "e2e"})
    assert resp.status_code == 202
    await eventually(lambda: scalar(stack, "gateway",
                                    "SELECT count(*) FROM adjudications WHERE applied_at IS NOT NULL"),
                     "the adjudication to be applied")
    assert query(stack, "consensus", "SELECT accepted FROM decisions WHERE study_id = %s", (study_id,)) == [(False,)]
    assert query(stack, "consensus", "SELECT accepted, curator_id FROM adjudications") == [(True, "admin")]
    assert query(stack, "gateway", "SELECT accepted, rule FROM decisions WHERE study_id = %s",
                 (study_id,)) == [(True, "curator-adjudication")]


async def check_report(stack, api) -> None:
    report = (await api.request("GET", "/api/v1/reports/agreement", params={"wait": 30})).json()
    assert report["status"] == "ready" and report["studies"]["decided"] == SAMPLED
    assert len(report["readers"]) == 17 and sum(r["reads"] for r in report["readers"].values()) == 3 * SAMPLED
    assert set(report["fleiss_kappa"]) == set(report["verdict_shares"]["per_label"])
    assert report["ai_vs_expert"]["by_difficulty"] and report["ai_vs_expert"]["by_model"]
    printed = await invoke(["report", "--state-dir", stack["state_dir"]])
    assert printed.exit_code == 0, printed.output
    assert "kappa" in printed.stdout and "AI vs expert, difficulty" in printed.stdout
    metrics = httpx.get(f"{stack['services']['consensus']['url']}/metrics").text
    assert 'radcurate_fleiss_kappa{label="cardiomegaly"}' in metrics
    assert 'radcurate_studies{state="accepted"}' in metrics


async def release_twice(stack, api) -> dict:
    """Same accepted studies, plan and seed: the second release has the same labels and split."""
    with pytest.raises(GatewayError) as refused:
        await api.request_release({"target_size": TARGET, "label_bounds": {"pneumonia": {"min": 3}}}, "e2e-bad")
    assert refused.value.status == 422 and "pneumonia" in refused.value.problem["detail"]
    for rid in ("e2e-a", "e2e-b"):
        await api.request_release({"target_size": TARGET, "seed": 3}, rid)
        await eventually(lambda rid=rid: _released(api, rid), f"release {rid}")
    store, pub, hold = store_for(stack), stack["buckets"]["public"], stack["buckets"]["holdout"]
    for bucket, key in ((pub, "labels.csv"), (hold, "holdout/labels.csv")):
        a, b = (store.get_bytes(bucket, f"releases/{rid}/{key}") for rid in ("e2e-a", "e2e-b"))
        assert a == b
    cards = [json.loads(store.get_bytes(pub, f"releases/{rid}/dataset_card.json")) for rid in ("e2e-a", "e2e-b")]
    assert {**cards[0], "release_id": ""} == {**cards[1], "release_id": ""}
    assert cards[0]["agreement"]["fleiss_kappa"] and cards[0]["prevalence"]["holdout"]
    agreement, composition = cards[0]["agreement"], cards[0]["composition"]
    assert agreement["bootstrap"]["unit"] == "patient" and set(agreement["krippendorff_alpha"]) == set(
        agreement["fleiss_kappa"])
    assert any(agreement["fleiss_kappa_ci95"].values())
    assert composition["achieved"]["studies"] == TARGET and composition["plan"]["groups"]["normal"] == 2
    assert sum(composition["achieved"]["labels_per_study"].values()) == TARGET
    return await api.release("e2e-a")


def check_provenance(stack) -> None:
    """Every released label row says how it was decided; the card counts each path (issue 12 §2).
    Readers' corrections on accepted studies are flags for curator review."""
    store = store_for(stack)
    adjudicated = dict(query(stack, "consensus", "SELECT study_id, curator_id FROM adjudications"))
    card = json.loads(store.get_bytes(stack["buckets"]["public"], "releases/e2e-a/dataset_card.json"))
    for bucket, prefix, split in ((stack["buckets"]["public"], "releases/e2e-a", "released"),
                                  (stack["buckets"]["holdout"], "releases/e2e-a/holdout", "holdout")):
        labels = [r["study_id"]
                  for r in csv.DictReader(io.StringIO(store.get_bytes(bucket, f"{prefix}/labels.csv").decode()))]
        rows = list(csv.DictReader(io.StringIO(store.get_bytes(bucket, f"{prefix}/provenance.csv").decode())))
        assert [r["study_id"] for r in rows] == labels
        for r in rows:
            tally = dict(part.split("=") for part in r["votes"].split(";"))
            assert sum(map(int, tally.values())) == 3
            assert (r["rule"], r["rule_version"]) == ("cxr-agree-all-majority", "1")
            assert (r["decision_path"], r["adjudicator"]) == (("adjudicated", adjudicated[r["study_id"]])
                                                               if r["study_id"] in adjudicated else ("rule", ""))
            assert r["decision_path"] == "adjudicated" or int(tally["agree_all"]) >= 2
        assert card["provenance"][split] == {"rule": sum(r["decision_path"] == "rule" for r in rows),
                                             "adjudicated": sum(r["decision_path"] == "adjudicated" for r in rows)}
    corrections = query(stack, "consensus", "SELECT f.reason FROM flags f JOIN decisions d USING (study_id)"
                        " WHERE f.reason LIKE 'correction:%%' AND d.accepted")
    assert corrections, "the simulated panel corrects some accepted studies"


async def check_truth_audit(stack, data) -> None:
    """`radcurate report --truth`: the release's label error against the synthetic truth."""
    printed = await invoke(["report", "--truth", str(data / "truth.jsonl"), "--release-id", "e2e-a", "--json",
                            "--state-dir", stack["state_dir"]])
    assert printed.exit_code == 0, printed.output
    audit = json.loads(printed.stdout)
    assert audit["release_id"] == "e2e-a"
    assert audit["studies"]["released"]["total"] + audit["studies"]["holdout"]["total"] == TARGET
    assert set(audit["per_label"]["holdout"]) == set(audit["per_label"]["released"])


async def check_export(stack, tmp_path) -> None:
    out = tmp_path / "export"
    result = await invoke(["export", "e2e-a", str(out), "--state-dir", stack["state_dir"]])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_bytes())
    assert len(list(out.rglob("*.dcm"))) == len(manifest["released"]["objects"]) > 0
    assert (out / "labels.csv").exists() and (out / "dataset_card.json").exists()
    assert not (out / "holdout").exists()


def perfect_predictions(stack) -> tuple[str, list[str]]:
    holdout_csv = store_for(stack).get_bytes(stack["buckets"]["holdout"], "releases/e2e-a/holdout/labels.csv").decode()
    rows = list(csv.reader(io.StringIO(holdout_csv)))
    lines = [",".join(rows[0])] + [",".join([r[0], *("0.9" if c == "1" else "0.1" for c in r[1:])]) for r in rows[1:]]
    return "\n".join(lines) + "\n", [r[0] for r in rows[1:]]


async def check_evaluations(stack, api, release, tmp_path) -> None:
    evaluator = api.as_user(await api.create_user("team-a", "evaluator", team="team-a"))
    text, holdout = perfect_predictions(stack)
    await check_evaluator_path(evaluator, release, text, holdout)
    resp = await evaluator.request("POST", "/api/v1/evaluations", params={"release_id": "e2e-a"},
                                   content=text.encode(), headers={"Content-Type": "text/csv"})
    assert resp.status_code == 201, resp.text
    result = resp.json()
    assert result["status"] == "scored" and result["metrics"]["macro"]["auroc"] == 1.0
    quota = result.pop("quota")
    assert (quota["per_day"], quota["used"], quota["remaining"]) == (PER_DAY, 1, PER_DAY - 1)
    # the release's policy (issue 11 §10): the rounded ladder value only, no per-label table, no intervals
    assert set(result["metrics"]) == {"policy", "resolution", "margin", "improved", "metric_version", "macro"}
    assert result["metrics"]["macro"] == {"auroc": 1.0} and result["metrics"]["improved"] is True
    version = f"e2e-a@{release['manifest_sha256']}"
    assert result["receipt"] == receipt(text.encode(), version, METRIC_VERSION)
    fetched = (await evaluator.request("GET", f"/api/v1/evaluations/{result['evaluation_id']}")).json()
    assert fetched == result
    (tmp_path / "pred.csv").write_text(text)
    (tmp_path / "truth.csv").write_bytes(store_for(stack).get_bytes(stack["buckets"]["holdout"],
                                                                    "releases/e2e-a/holdout/labels.csv"))
    cli_out = await invoke(["score", "--truth", str(tmp_path / "truth.csv"), "--pred", str(tmp_path / "pred.csv")])
    assert json.loads(cli_out.stdout)["macro"]["auroc"] == result["metrics"]["macro"]["auroc"]
    await check_refusals(evaluator, text, holdout)


async def check_team_policy(stack, api) -> None:
    """Issue 11 §10 on release e2e-b: the quota is the team's (shared by its evaluators, not reset by
    deactivating and re-creating one), the lifetime budget ends ordinary submissions with a 409, and
    the one final evaluation answers the full per-label table, once."""
    text, _ = perfect_predictions(stack)
    variants = [text.replace("0.9", f"0.{8 - i}", 1) for i in range(6)]
    with pytest.raises(GatewayError) as err:
        await api.create_user("no-team", "evaluator")
    assert err.value.status == 422 and "team" in err.value.problem["detail"]
    one = api.as_user(await api.create_user("team-b-1", "evaluator", team="team-b"))
    two = api.as_user(await api.create_user("team-b-2", "evaluator", team="team-b"))

    async def submit(who, body: str, **params):
        async with httpx.AsyncClient(timeout=60) as raw:
            return await raw.post(f"{who.base_url}/api/v1/evaluations", params={"release_id": "e2e-b", **params},
                                  content=body.encode(), headers={"Authorization": f"Bearer {who.token}",
                                                                  "Content-Type": "text/csv"})

    shown = [(await submit(who, body)) for who, body in ((one, variants[0]), (two, variants[1]), (one, variants[2]))]
    assert [r.status_code for r in shown] == [201, 201, 201]
    assert {json.dumps(r.json()["metrics"]["macro"]) for r in shown} == {json.dumps({"auroc": 1.0})}
    assert [r.json()["metrics"]["improved"] for r in shown] == [True, False, False]  # one ladder for the team
    refused = await submit(two, variants[3])
    assert refused.status_code == 429 and refused.json()["quota"]["team"] == "team-b"
    await api.request("DELETE", "/api/v1/users/team-b-2")
    again = api.as_user(await api.create_user("team-b-3", "evaluator", team="team-b"))
    assert (await submit(again, variants[3])).status_code == 429  # a new account: the same team's quota
    # The lifetime budget: the release's recorded policy, lowered here to what the team has used.
    query(stack, "gateway", "UPDATE releases SET evaluation_policy = jsonb_set(evaluation_policy,"
          " '{lifetime_per_team}', '3') WHERE release_id = 'e2e-b' RETURNING 1")
    spent = await submit(again, variants[3])
    assert spent.status_code == 409 and spent.json()["type"].endswith("/evaluation-budget-spent")
    assert "lifetime budget" in spent.json()["detail"] and spent.json()["quota"]["lifetime_remaining"] == 0
    final = await submit(again, variants[4], final="true")
    assert final.status_code == 201 and final.json()["final"] is True, final.text
    assert set(final.json()["metrics"]["per_label"]) and final.json()["metrics"]["ci95"]["macro"]["auroc"]
    once = await submit(one, variants[5], final="true")
    assert once.status_code == 409 and once.json()["type"].endswith("/final-evaluation-used")


async def check_evaluator_path(evaluator, release: dict, text: str, holdout: list[str]) -> None:
    """What is open, in which format, and a free check before any quota is spent."""
    listed = (await evaluator.request("GET", "/api/v1/evaluations/releases")).json()
    entry = next(r for r in listed if r["release_id"] == "e2e-a")
    assert entry["metric"]["name"] == "macro AUROC" and entry["submission"]["row_count"] == release["holdout_count"]
    assert entry["submission"]["columns"] == text.splitlines()[0].split(",")
    detail = (await evaluator.request("GET", entry["links"]["self"])).json()
    assert detail["holdout_study_ids"] == sorted(holdout)
    example = await evaluator.request("GET", entry["links"]["example"])
    assert example.headers["content-type"].startswith("text/csv")
    checked = await evaluator.request("POST", entry["links"]["validate"], content=example.content,
                                      headers={"Content-Type": "text/csv"})
    assert checked.json()["valid"] is True and checked.json()["rows"] == len(holdout)
    with pytest.raises(GatewayError) as err:
        await evaluator.request("POST", entry["links"]["validate"], headers={"Content-Type": "text/csv"},
                                content=text.replace(f"\n{holdout[0]},", "\nnot-a-study,").encode())
    assert err.value.status == 422 and err.value.problem["quota_used"] is False
    assert "missing holdout rows: 1" in err.value.problem["detail"]
    assert "not in the holdout set: 1" in err.value.problem["detail"]
    quota = (await evaluator.request("GET", "/api/v1/evaluations/quota")).json()
    assert quota["used"] == 0 and quota["remaining"] == PER_DAY


async def check_refusals(evaluator, text: str, holdout: list[str]) -> None:
    async def submit(body: str, **kw):
        files = {"predictions": ("pred.csv", body.encode(), "text/csv")}
        return await evaluator.request("POST", "/api/v1/evaluations", data={"release_id": "e2e-a"}, files=files, **kw)

    cases = [(text.replace(f"\n{holdout[0]},", "\nnot-a-study,"), "missing holdout studies: 1"),
             (text.replace("0.9", "nan", 1), "NaN")]
    for body, message in cases:
        with pytest.raises(GatewayError) as err:
            await submit(body)
        assert err.value.status == 422 and message in err.value.problem["detail"]
    with pytest.raises(GatewayError) as err:  # a format error is caught by the gateway and costs no quota
        await submit(text.replace("study_id,", "study,"))
    assert err.value.status == 422 and "wrong columns" in err.value.problem["detail"]
    first = (await evaluator.request("GET", "/api/v1/evaluations")).json()[-1]
    again = await submit(text)  # identical bytes: the first answer again, no quota spent (none is left)
    assert again.status_code == 200 and again.json()["resubmission"] is True
    assert again.json()["evaluation_id"] == first["evaluation_id"] and again.json()["metrics"] == first["metrics"]
    async with httpx.AsyncClient() as raw:
        refused = await raw.post(f"{evaluator.base_url}/api/v1/evaluations", data={"release_id": "e2e-a"},
                                 files={"predictions": ("p.csv", text.replace("0.9", "0.8", 1).encode(), "text/csv")},
                                 headers={"Authorization": f"Bearer {evaluator.token}"})
    assert refused.status_code == 429 and refused.json()["title"] == "Too Many Requests"
    assert 0 < int(refused.headers["Retry-After"]) <= 86_400
    assert refused.json()["quota"]["remaining"] == 0


async def test_votes_become_an_adjudicated_reproducible_release_and_a_scored_evaluation(stack, tmp_path):
    api, _ = await run_funnel(stack, tmp_path)
    try:
        await adjudicate_one(stack, api)
        await check_report(stack, api)
        release = await release_twice(stack, api)
        check_provenance(stack)
        await check_export(stack, tmp_path)
        await check_truth_audit(stack, tmp_path / "synth")
        await check_evaluations(stack, api, release, tmp_path)
        await check_team_policy(stack, api)
    finally:
        await api.aclose()


async def test_an_evaluator_scripts_validate_then_submit_with_the_command_line(stack, tmp_path):
    """`radcurate evaluate` with an evaluator's token: a refused file exits 1 naming its problems and
    costs nothing; a valid one is scored; the same bytes again answer the first result.
    After the test above: it scores against release e2e-a."""
    api = Gateway(stack["gateway_url"], stack["admin_token"])
    try:
        env = {"RADCURATE_GATEWAY_URL": stack["gateway_url"],
               "RADCURATE_TOKEN": await api.create_user("team-cli", "evaluator", team="team-cli")}
    finally:
        await api.aclose()
    text, holdout = perfect_predictions(stack)
    (tmp_path / "bad.csv").write_text(text.replace("0.9", "nan", 1))
    (tmp_path / "good.csv").write_text(text)

    def run(*args: str):
        return CliRunner().invoke(cli, ["evaluate", "e2e-a", *args], env=env)

    bad = await asyncio.to_thread(run, str(tmp_path / "bad.csv"), "--validate-only")
    assert bad.exit_code == 1 and "HTTP 422" in bad.stderr and "values that are NaN: 1" in bad.stderr
    good = await asyncio.to_thread(run, str(tmp_path / "good.csv"), "--validate-only")
    assert good.exit_code == 0 and f"valid: {len(holdout)} rows" in good.stdout, good.output
    scored = await asyncio.to_thread(run, str(tmp_path / "good.csv"))
    assert scored.exit_code == 0, scored.output
    assert "main metric: 1.0000" in scored.stdout and f"quota: {PER_DAY - 1} of {PER_DAY} left" in scored.stdout
    again = await asyncio.to_thread(run, str(tmp_path / "good.csv"), "--json")
    body = json.loads(again.stdout)
    assert body["resubmission"] is True and body["quota"]["remaining"] == PER_DAY - 1
    assert query(stack, "gateway", "SELECT count(*) FROM evaluations WHERE evaluator_id = 'team-cli'") == [(1,)]


@pytest.mark.browser
async def test_an_evaluator_validates_then_submits_on_the_evaluator_page(stack, browser, tmp_path):
    """In Chromium: the release's policy and the team's quota are shown; a bad file is explained
    for free, a good one validates, is scored, and submitting it again shows the first result
    without using quota; the team's final evaluation asks first, shows the full per-label table
    and is then spent (stored as final, button disabled); sign-out clears the page.
    Last in the module: it scores against release e2e-a, made by the test above."""
    from playwright.async_api import expect

    api = Gateway(stack["gateway_url"], stack["admin_token"])
    try:
        evaluator_token = await api.create_user("team-web", "evaluator", team="team-web")
    finally:
        await api.aclose()
    text, holdout = perfect_predictions(stack)
    (tmp_path / "bad.csv").write_text(text.replace(f"\n{holdout[0]},", "\nnot-a-study,"))
    (tmp_path / "good.csv").write_text(text)

    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    await page.goto(stack["gateway_url"] + "/evaluate")
    await page.fill("#token", evaluator_token)
    await page.press("#token", "Enter")
    item = page.locator('li.release[data-release="e2e-a"]')
    await expect(item.locator(".metric")).to_contain_text("macro AUROC")
    quota = item.locator(".quota")
    await expect(item.locator(".policy")).to_contain_text("beats your team's best by more than")
    await expect(quota).to_contain_text(f"Team team-web: {PER_DAY} of {PER_DAY} submissions left today")
    await expect(quota).to_contain_text("final evaluation not yet used")
    outcome = item.locator(".outcome")

    await item.locator(".file").set_input_files(str(tmp_path / "bad.csv"))
    await item.locator(".validate").click()
    await expect(outcome.locator(".error li").first).to_contain_text("study_ids not in the holdout set: 1")
    await expect(outcome).to_contain_text("missing holdout rows: 1")

    await item.locator(".file").set_input_files(str(tmp_path / "good.csv"))
    await item.locator(".validate").click()
    await expect(outcome.locator(".ok")).to_contain_text(f"Valid: {len(holdout)} rows")
    await expect(quota).to_contain_text(f"{PER_DAY} of {PER_DAY} submissions left today")
    await item.locator(".submit").click()
    await expect(outcome).to_contain_text("Main metric: 1.0000")
    await expect(outcome).to_contain_text("Receipt: ")
    await expect(quota).to_contain_text(f"{PER_DAY - 1} of {PER_DAY} submissions left today")
    await item.locator(".submit").click()
    await expect(outcome).to_contain_text("its result, no quota used")
    await expect(quota).to_contain_text(f"{PER_DAY - 1} of {PER_DAY} submissions left today")
    await expect(page.locator("#history tbody tr")).to_have_count(1)

    # the final evaluation: asked on the page first; cancelling spends nothing
    await item.locator(".final").click()
    await expect(item.locator(".confirm-final")).to_be_visible()
    await item.locator(".final-cancel").click()
    await expect(item.locator(".confirm-final")).to_be_hidden()
    assert query(stack, "gateway", "SELECT count(*) FROM evaluations WHERE team = 'team-web' AND final") == [(0,)]
    await item.locator(".final").click()
    await item.locator(".final-go").click()
    table = outcome.locator("table.full-result")
    await expect(table.locator("tbody tr").last).to_contain_text("macro")
    await expect(table.locator("thead")).to_contain_text("auroc")
    assert await table.locator("tbody tr").count() > 2  # one row per label, then macro
    await expect(quota).to_contain_text("final evaluation used")
    await expect(item.locator(".final")).to_be_disabled()
    assert query(stack, "gateway", "SELECT count(*) FROM evaluations WHERE team = 'team-web' AND final") == [(1,)]
    await expect(page.locator("#history tbody tr")).to_have_count(2)

    await page.click("#logout")
    await expect(page.locator("#login")).to_be_visible()
    await expect(page.locator("#app")).to_be_hidden()
    assert await page.locator("#releases li").count() == 0 and await page.input_value("#token") == ""
    assert await page.evaluate("sessionStorage.length") == 0
