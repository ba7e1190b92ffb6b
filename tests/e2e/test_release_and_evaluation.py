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
from services.consensus.scoring_cxr import METRIC_VERSION, receipt
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
    await eventually(lambda: scalar(stack, "gateway", "SELECT count(*) FROM adjudications WHERE applied_at IS NOT NULL"),
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
    assert 'radcurate_fleiss_kappa{label="cardiomegaly"}' in metrics and 'radcurate_studies{state="accepted"}' in metrics


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
    evaluator = api.as_user(await api.create_user("team-a", "evaluator"))
    text, holdout = perfect_predictions(stack)
    resp = await evaluator.request("POST", "/api/v1/evaluations", params={"release_id": "e2e-a"},
                                   content=text.encode(), headers={"Content-Type": "text/csv"})
    assert resp.status_code == 201, resp.text
    result = resp.json()
    assert result["status"] == "scored" and result["metrics"]["macro"]["auroc"] == 1.0
    assert result["metrics"]["ci95"]["macro"]["auroc"] is not None
    version = f"e2e-a@{release['manifest_sha256']}"
    assert result["receipt"] == receipt(text.encode(), version, METRIC_VERSION)
    fetched = (await evaluator.request("GET", f"/api/v1/evaluations/{result['evaluation_id']}")).json()
    assert fetched == result
    (tmp_path / "pred.csv").write_text(text)
    (tmp_path / "truth.csv").write_bytes(store_for(stack).get_bytes(stack["buckets"]["holdout"],
                                                                    "releases/e2e-a/holdout/labels.csv"))
    cli_out = await invoke(["score", "--truth", str(tmp_path / "truth.csv"), "--pred", str(tmp_path / "pred.csv")])
    assert json.loads(cli_out.stdout)["macro"] == result["metrics"]["macro"]
    await check_refusals(evaluator, text, holdout)


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
    with pytest.raises(GatewayError) as err:
        await submit(text)
    assert err.value.status == 429 and err.value.problem["title"] == "Too Many Requests"


async def test_votes_become_an_adjudicated_reproducible_release_and_a_scored_evaluation(stack, tmp_path):
    api, _ = await run_funnel(stack, tmp_path)
    try:
        await adjudicate_one(stack, api)
        await check_report(stack, api)
        release = await release_twice(stack, api)
        await check_export(stack, tmp_path)
        await check_truth_audit(stack, tmp_path / "synth")
        await check_evaluations(stack, api, release, tmp_path)
    finally:
        await api.aclose()
