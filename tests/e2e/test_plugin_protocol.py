"""A third protocol through all five service processes, with no service file naming it: the
tests' pneumothorax triage (tests/support/pneumothorax.py) is loaded by every service through
RADCURATE_PROTOCOLS, and its rule through the consensus rules file. Reports → keyword findings →
a one-label suggestion → sampling → readers voting present/absent with a box over HTTP →
unanimity decisions → a release → a scored holdout evaluation."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from radcurate.client import Gateway
from radcurate.demo import ingest_folder, store_for
from radcurate.stack import local
from services.common import protocols
from services.common.protocols import PLUGINS_ENV
from tests.e2e.conftest import eventually, query, scalar
from tests.support import pneumothorax
from tests.support.factories import study_folder
from tests.support.pneumothorax import NAME, RULE

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
STUDIES, READERS, TARGET = 12, 3, 8
BOX = {"x": 20.0, "y": 24.0, "width": 30.0, "height": 40.0}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    """The stack with the plug-in loaded in every service, and a rules file that names its rule."""
    state_dir = tmp_path_factory.mktemp("stack")
    rules = state_dir / "rules.yaml"
    rules.write_text((ROOT / "services" / "consensus" / "rules.yaml").read_text()
                     + f"{NAME}:\n  rule: {RULE}\n  version: '1'\n  readers_per_study: {READERS}\n")
    env = {PLUGINS_ENV: "tests.support.pneumothorax", "RADCURATE_CONSENSUS_RULES_FILE": str(rules)}
    protocols.register(pneumothorax.PROTOCOL)  # this process ingests through the gateway's code too
    state = local.up(state_dir, service_env=env)
    yield state
    local.down(state_dir)


def positive(i: int) -> bool:
    return i % 2 == 1


async def _at_least(api: Gateway, key: str, value: int) -> bool:
    return (await api.progress(NAME))["funnel"][key] >= value


async def test_a_protocol_from_the_tests_goes_through_the_whole_funnel(stack, tmp_path):
    reports = [(f"PTX-{i:02d}", f"PP-{i:02d}", "Small left apical pneumothorax." if positive(i)
                else "No pneumothorax. Lungs are clear.") for i in range(STUDIES)]
    summary = await ingest_folder(stack, study_folder(tmp_path / "in", reports), protocol=NAME)
    assert (summary.ingested, summary.rejected) == (STUDIES, [])
    truth = {sid: positive(i) for i, (sid, _, _) in enumerate(reports)}

    admin = Gateway(stack["gateway_url"], stack["admin_token"])
    try:
        await eventually(lambda: _at_least(admin, "suggested", STUDIES), "a suggestion for every study")
        suggested = dict(query(stack, "mapper", "SELECT study_id, labels FROM suggestions WHERE protocol = %s",
                               (NAME,)))
        assert {sid: bool(labels) for sid, labels in suggested.items()} == truth

        readers = [f"ptx-reader-{k}" for k in range(READERS)]
        tokens = [await admin.create_user(r, "reviewer") for r in readers]
        await admin.request_sampling({"n": STUDIES, "readers_per_study": READERS, "seed": 3, "min_per_label": 2},
                                     readers, NAME)
        await eventually(lambda: _at_least(admin, "assignments", READERS * STUDIES), "assignments")
        for token in tokens:
            me = admin.as_user(token)
            while (task := await me.next_assignment()) is not None:
                assert task["protocol"] == NAME and task["label_ids"] == ["pneumothorax"]
                present = truth[task["study_id"]]
                out = await me.vote(task["assignment_id"], {"present": present, "box": BOX if present else None})
                assert out["present"] is present, out
        await eventually(lambda: _at_least(admin, "decided", STUDIES), "a decision for every study")
        assert scalar(stack, "consensus", "SELECT count(*) FROM decisions WHERE accepted") == STUDIES
        boxes = query(stack, "consensus", "SELECT judgement->'box' FROM votes WHERE judgement->>'present' = 'true'")
        assert len(boxes) == READERS * sum(truth.values()) and all(b == BOX for (b,) in boxes)

        await admin.request_release({"target_size": TARGET, "seed": 1, "min_per_label": 0}, "ptx-e2e", protocol=NAME)
        await eventually(lambda: _released(admin, "ptx-e2e"), "the release")
        holdout_csv = store_for(stack).get_bytes(stack["buckets"]["holdout"],
                                                 "releases/ptx-e2e/holdout/labels.csv").decode()
        rows = list(csv.DictReader(io.StringIO(holdout_csv)))
        assert rows and all(bool(int(r["pneumothorax"])) is truth[r["study_id"]] for r in rows)

        evaluator = admin.as_user(await admin.create_user("ptx-team", "evaluator", team="ptx-team"))
        predictions = "study_id,pneumothorax\n" + "".join(
            f"{r['study_id']},{0.9 if truth[r['study_id']] else 0.1}\n" for r in rows)
        resp = await evaluator.request("POST", "/api/v1/evaluations", params={"release_id": "ptx-e2e"},
                                       content=predictions.encode(), headers={"Content-Type": "text/csv"})
        result = resp.json()
        if result.get("status") == "pending":
            await eventually(lambda: _scored(evaluator, result["evaluation_id"]), "the evaluation")
            result = (await evaluator.request("GET", f"/api/v1/evaluations/{result['evaluation_id']}")).json()
        assert result["status"] == "scored", result
        # the release's policy shows the headline (its first float: accuracy), rounded, nothing else
        assert result["metrics"]["accuracy"] == 1.0 and "studies" not in result["metrics"]
    finally:
        await admin.aclose()


async def _released(api: Gateway, release_id: str) -> bool:
    return (await api.release(release_id))["status"] == "released"


async def _scored(evaluator: Gateway, evaluation_id: str) -> bool:
    return (await evaluator.request("GET", f"/api/v1/evaluations/{evaluation_id}")).json()["status"] != "pending"
