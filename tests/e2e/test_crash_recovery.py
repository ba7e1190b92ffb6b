"""SIGKILL a service in the middle of its work, restart it, and find nothing lost or applied twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from radcurate.client import Gateway
from radcurate.demo import ingest_folder
from radcurate.simulate import load_truth, register_panel, run_panel
from radcurate.stack import local
from radcurate.synth import synth_cxr
from tests.e2e.conftest import eventually, query, scalar

pytestmark = pytest.mark.e2e
STUDIES, SAMPLED = 400, 40


def kill(stack: dict, service: str) -> None:
    os.kill(stack["services"][service]["pid"], signal.SIGKILL)


async def test_killed_services_resume_without_losing_or_repeating_an_event(stack, tmp_path):
    data = tmp_path / "synth"
    synth_cxr(STUDIES, 23, data)
    ingest = asyncio.create_task(ingest_folder(stack, data, concurrency=4))
    await eventually(lambda: scalar(stack, "extractor", "SELECT count(*) FROM findings") >= 25, "extraction to start")
    kill(stack, "extractor")
    kill(stack, "mapper")
    extracted_at_kill = scalar(stack, "extractor", "SELECT count(*) FROM findings")
    assert extracted_at_kill < STUDIES  # the kill really happened mid-run
    await ingest
    restarted = await asyncio.to_thread(local.up, Path(stack["state_dir"]))
    assert restarted["services"]["extractor"]["pid"] != stack["services"]["extractor"]["pid"]
    stack.update(restarted)

    api = Gateway(stack["gateway_url"], stack["admin_token"])
    try:
        await eventually(lambda: _funnel(api, "suggested", STUDIES), "every study to get suggestions", 180)
        readers = await register_panel(api, 6, seed=1)
        await api.request_sampling({"n": SAMPLED, "readers_per_study": 3, "seed": 2})
        await eventually(lambda: _funnel(api, "assignments", 3 * SAMPLED), "assignments")
        truth = load_truth(data / "truth.jsonl")
        voting = asyncio.create_task(run_panel(api, readers, truth))
        await eventually(lambda: scalar(stack, "consensus", "SELECT count(*) FROM votes") >= 20, "votes to arrive")
        kill(stack, "consensus")
        await voting
        stack.update(await asyncio.to_thread(local.up, Path(stack["state_dir"])))
        await eventually(lambda: _funnel(api, "decided", SAMPLED), "every sampled study decided", 180)
    finally:
        await api.aclose()

    # Nothing lost: every study went through every step exactly once.
    for schema, sql in [("extractor", "SELECT count(*), count(DISTINCT study_id) FROM findings"),
                        ("mapper", "SELECT count(*), count(DISTINCT study_id) FROM suggestions"),
                        ("gateway", "SELECT count(*), count(DISTINCT study_id) FROM suggestions")]:
        assert query(stack, schema, sql)[0] == (STUDIES, STUDIES), schema
    # Nothing applied twice: each handler emitted one event per study, and every consumed event is
    # in the inbox once.
    for schema, topic in [("extractor", "findings-extracted"), ("mapper", "labels-suggested")]:
        assert query(stack, schema, "SELECT count(*), count(DISTINCT msg_key) FROM outbox WHERE topic = %s",
                     (topic,))[0] == (STUDIES, STUDIES)
        assert scalar(stack, schema, "SELECT count(*) FROM inbox WHERE outcome = 'applied'") == STUDIES
    assert query(stack, "consensus", "SELECT count(*), count(DISTINCT vote_id) FROM votes")[0] == (3 * SAMPLED,) * 2
    assert scalar(stack, "consensus", "SELECT count(*) FROM votes WHERE NOT counted") == 0
    assert query(stack, "consensus", "SELECT count(*), count(DISTINCT msg_key) FROM outbox"
                                     " WHERE topic = 'consensus-reached'")[0] \
        == (SAMPLED, SAMPLED)
    assert scalar(stack, "consensus", "SELECT count(*) FROM decisions WHERE jsonb_array_length(vote_ids) <> 3") == 0
    assert scalar(stack, "extractor", "SELECT count(*) FROM inbox WHERE outcome = 'dead_lettered'") == 0


async def _funnel(api: Gateway, key: str, value: int) -> bool:
    return (await api.progress())["funnel"][key] >= value


def cli(*args: str) -> subprocess.CompletedProcess[str]:

    return subprocess.run([sys.executable, "-m", "radcurate.cli", *args], capture_output=True, text=True, timeout=180)


def test_up_is_idempotent_status_tells_the_truth_and_down_stops_exactly_the_stack(stack):
    import json

    from radcurate.stack.procs import alive

    state_dir = stack["state_dir"]
    before = json.loads((Path(state_dir) / "stack.json").read_text())
    assert cli("up", "--state-dir", state_dir).returncode == 0
    after = json.loads((Path(state_dir) / "stack.json").read_text())
    assert {s: i["pid"] for s, i in after["services"].items()} == {s: i["pid"] for s, i in before["services"].items()}

    assert cli("status", "--state-dir", state_dir).returncode == 0
    os.kill(after["services"]["sampler"]["pid"], signal.SIGKILL)
    status = cli("status", "--state-dir", state_dir)
    assert status.returncode == 1 and "sampler    down" in status.stdout

    assert cli("up", "--state-dir", state_dir).returncode == 0
    repaired = json.loads((Path(state_dir) / "stack.json").read_text())
    assert alive(repaired["services"]["sampler"]["pid"])
    assert repaired["kafka"]["pid"] == before["kafka"]["pid"]  # healthy parts were left alone

    pids = [i["pid"] for i in repaired["services"].values()] + [repaired[p]["pid"] for p in ("kafka", "postgres", "s3")]
    down = cli("down", "--state-dir", state_dir)
    assert down.returncode == 0
    assert not any(alive(p) for p in pids)
    assert "nothing was running" in cli("down", "--state-dir", state_dir).stdout
