"""The local stack keeps its data across `radcurate down` / `radcurate up`, as a campaign that
lasts weeks needs: users and their tokens, studies and their DICOM objects, votes, and the
broker's consumer positions; the gateway comes back on the same port; `down --wipe` starts afresh.
Driven through the command line, as an operator would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from radcurate.client import Gateway
from tests.e2e.conftest import eventually, print_log_tails
from tests.e2e.test_bad_input import ingest_http
from tests.support.factories import dicom_bytes

pytestmark = pytest.mark.e2e

CLI = [sys.executable, "-c", "from radcurate.cli import main; main()"]


def radcurate(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=240, env=env)
    assert "XDG_RUNTIME_DIR" not in done.stderr, done.stderr
    return done


def stack_state(state_dir: Path) -> dict:
    return json.loads((state_dir / "stack.json").read_text())


async def suggested(api: Gateway, n: int) -> bool:
    return (await api.progress())["funnel"]["suggested"] >= n


async def test_down_then_up_keeps_users_studies_votes_and_the_gateway_port(tmp_path: Path) -> None:
    state_dir = tmp_path / "stack"
    up = radcurate("up", "--state-dir", str(state_dir))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = stack_state(state_dir)
        admin = Gateway(state["gateway_url"], state["admin_token"])
        assert (await ingest_http(state, "DUR-1", dicom_bytes(tmp_path, "DUR-1", seed=1))).status_code == 201
        readers = ["dur-1", "dur-2", "dur-3"]
        tokens = {r: await admin.create_user(r, "reviewer") for r in readers}
        await eventually(lambda: suggested(admin, 1), "the study's suggested labels")
        run = (await admin.request("POST", "/api/v1/sampling-runs", json={
            "plan": {"n": 1, "readers_per_study": 3, "seed": 1}, "panel": readers})).json()
        reader = admin.as_user(tokens["dur-1"])

        async def assigned() -> dict | None:
            return await reader.next_assignment()
        await eventually(assigned, "an assignment for dur-1")
        assignment = await reader.next_assignment()
        await reader.vote(assignment["assignment_id"], {"verdict": "agree_all"})
        image = (await reader.request("GET", "/api/v1/studies/DUR-1/image")).content
        await admin.aclose()
        await reader.aclose()

        down = radcurate("down", "--state-dir", str(state_dir))
        assert down.returncode == 0 and "s3" in down.stdout and "postgres" in down.stdout, down.stdout
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{state['gateway_url']}/healthz", timeout=2)

        again = radcurate("up", "--state-dir", str(state_dir))
        assert again.returncode == 0, again.stdout + again.stderr
        state2 = stack_state(state_dir)
        assert state2["gateway_url"] == state["gateway_url"]
        admin = Gateway(state2["gateway_url"], state2["admin_token"])
        reader = admin.as_user(tokens["dur-1"])
        assert (await reader.request("GET", "/api/v1/me")).json()["user_id"] == "dur-1"
        assert (await reader.request("GET", "/api/v1/studies/DUR-1/image")).content == image
        votes = (await admin.request("GET", "/api/v1/votes")).json()
        assert [(v["study_id"], v["reader_id"], v["verdict"]) for v in votes] == [("DUR-1", "dur-1", "agree_all")]
        sampled = await admin.sampling_run(run["run_id"])
        assert sampled["n_selected"] == 1
        # The consumers carry on from their committed positions in the broker's kept log.
        assert (await ingest_http(state2, "DUR-2", dicom_bytes(tmp_path, "DUR-2", seed=2))).status_code == 201
        await eventually(lambda: suggested(admin, 2), "the second study's suggested labels")
        assert (await admin.progress())["funnel"]["ingested"] == 2
        await admin.aclose()
        await reader.aclose()
    except BaseException:
        print_log_tails(state_dir)
        raise
    finally:
        wiped = radcurate("down", "--wipe", "--state-dir", str(state_dir))
    assert wiped.returncode == 0, wiped.stdout + wiped.stderr
    assert not state_dir.exists()

