"""The CXR funnel through all five service processes, checked from the release backwards."""

from __future__ import annotations

import csv
import json

import pytest

from radcurate.client import Gateway
from radcurate.demo import ingest_folder, store_for
from radcurate.simulate import load_truth, register_panel, run_panel
from radcurate.synth import synth_cxr
from services.common.objectstore import sha256_hex
from tests.e2e.conftest import eventually, query, scalar

pytestmark = pytest.mark.e2e
STUDIES, SAMPLED, TARGET = 300, 60, 20


async def test_three_hundred_studies_become_a_released_benchmark_and_a_holdout(stack, tmp_path):
    data = tmp_path / "synth"
    synth_cxr(STUDIES, 11, data)
    summary = await ingest_folder(stack, data)
    assert (summary.ingested, summary.rejected) == (STUDIES, [])

    api = Gateway(stack["gateway_url"], stack["admin_token"])
    try:
        await eventually(lambda: _funnel(api, "suggested", STUDIES), "every study to get suggestions")
        readers = await register_panel(api, 17, seed=3)
        run = await api.request_sampling({"n": SAMPLED, "readers_per_study": 3, "seed": 5})
        assert len(run["panel"]) == 17
        await eventually(lambda: _funnel(api, "assignments", 3 * SAMPLED), "assignments")
        votes = await run_panel(api, readers, load_truth(data / "truth.jsonl"))
        assert votes == 3 * SAMPLED
        await eventually(lambda: _funnel(api, "decided", SAMPLED), "decisions")
        await api.request_release({"target_size": TARGET, "seed": 1}, "e2e-release")
        await eventually(lambda: _released(api, "e2e-release"), "the release")
        release = await api.release("e2e-release")
        funnel = (await api.progress())["funnel"]
    finally:
        await api.aclose()

    store = store_for(stack)
    manifest_bytes = store.get_bytes(stack["buckets"]["public"], release["manifest_key"])
    assert sha256_hex(manifest_bytes) == release["manifest_sha256"]
    manifest = json.loads(manifest_bytes)
    released, holdout = set(manifest["released"]["study_ids"]), set(manifest["holdout"]["study_ids"])
    assert released and holdout and not released & holdout
    assert len(released) + len(holdout) == min(TARGET, funnel["accepted"])

    with open(data / "reports.csv", newline="") as f:
        patient_of = {r["study_id"]: r["patient_id"] for r in csv.DictReader(f)}
    assert not {patient_of[s] for s in released} & {patient_of[s] for s in holdout}

    for study_id in released | holdout:
        agree_all = scalar(stack, "gateway",
                           "SELECT count(*) FROM votes WHERE study_id = %s AND judgement->>'verdict' = 'agree_all'",
                           (study_id,))
        assert agree_all >= 2, study_id

    for key, digest in manifest["files"].items():
        assert sha256_hex(store.get_bytes(stack["buckets"]["public"], key)) == digest
    for obj in manifest["released"]["objects"]:
        assert sha256_hex(store.get_bytes(stack["buckets"]["public"], obj["key"])) == obj["sha256"]
    public_keys = [o.object_name for o in store.client.list_objects(stack["buckets"]["public"], recursive=True)]
    assert not any("/holdout/" in k for k in public_keys)
    holdout_csv = store.get_bytes(stack["buckets"]["holdout"], "releases/e2e-release/holdout/labels.csv").decode()
    assert {line.split(",")[0] for line in holdout_csv.splitlines()[1:]} == holdout

    # The funnel's figures are the services' own counts, and they agree with each other.
    assert funnel["accepted"] == scalar(stack, "consensus", "SELECT count(*) FROM decisions WHERE accepted")
    assert 0 < funnel["accepted"] < SAMPLED
    assert scalar(stack, "consensus", "SELECT count(*) FROM votes WHERE counted") == 3 * SAMPLED
    assert query(stack, "sampler", "SELECT count(*), count(DISTINCT study_id) FROM sampled")[0] == (SAMPLED, SAMPLED)


async def _funnel(api: Gateway, key: str, value: int) -> bool:
    return (await api.progress())["funnel"][key] >= value


async def _released(api: Gateway, release_id: str) -> bool:
    return (await api.release(release_id))["status"] == "released"
