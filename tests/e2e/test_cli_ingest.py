"""`radcurate ingest DIR` against the whole running system: each study goes through the gateway's
ingest endpoint (issue 13 §2: the CLI talks to the stack through the gateway API), so what the
gateway stores and refuses is what the command reports, with its exit code."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from typer.testing import CliRunner

from radcurate.bulk_ingest import read_reports
from radcurate.cli import app as cli
from radcurate.demo import ingest_folder
from radcurate.synth import synth_cxr
from tests.e2e.conftest import query, scalar
from tests.support.factories import study_folder

pytestmark = pytest.mark.e2e


async def invoke(args: list[str]):
    """Run a `radcurate` command as a user would (its own event loop, so off this one)."""
    return await asyncio.to_thread(CliRunner().invoke, cli, args)


def studies(stack) -> int:
    return scalar(stack, "gateway", "SELECT count(*) FROM studies")


async def test_a_folder_is_ingested_through_the_gateway_api_and_a_second_run_adds_nothing(stack, tmp_path):
    data = tmp_path / "synth"
    synth_cxr(3, 7, data)
    ids = [row["study_id"] for row in read_reports(data)]
    state = ["--state-dir", stack["state_dir"], "--quiet"]

    first = await invoke(["ingest", str(data), *state])
    assert first.exit_code == 0, first.output
    assert "ingested 3, already present 0, rejected 0" in first.stdout
    stored = query(stack, "gateway", "SELECT study_id FROM studies WHERE study_id = ANY(%s)", (ids,))
    assert sorted(r[0] for r in stored) == sorted(ids)

    again = await invoke(["ingest", str(data), *state])
    assert again.exit_code == 0, again.output
    assert "ingested 0, already present 3, rejected 0" in again.stdout

    # Only the gateway's address and a curator's token are needed: no database or object-store access
    api_only = {"gateway_url": stack["gateway_url"], "admin_token": stack["admin_token"]}
    summary = await ingest_folder(api_only, data)
    assert (summary.ingested, summary.duplicates, summary.rejected) == (0, 3, [])


async def test_a_bad_folder_is_refused_with_a_message_and_a_non_zero_exit_and_stores_nothing(stack, tmp_path):
    state = ["--state-dir", stack["state_dir"], "--quiet"]
    before = studies(stack)

    # not a study folder at all: no reports.csv
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = await invoke(["ingest", str(empty), *state])
    assert missing.exit_code == 1 and "reports.csv not found" in missing.stderr

    # a study folder whose studies the gateway refuses: the reasons are its problem+json details
    folder = study_folder(tmp_path / "bad", [("CLI-BAD-1", "P-1", "Normal chest."),
                                             ("CLI-BAD-2", "P-2", "Normal chest.")],
                          identifiable={"CLI-BAD-1"}, not_dicom={"CLI-BAD-2"})
    refused = await invoke(["ingest", str(folder), *state])
    assert refused.exit_code == 1, refused.output
    assert "ingested 0, already present 0, rejected 2" in refused.stdout
    assert "rejected CLI-BAD-1:" in refused.stderr and "identifying data" in refused.stderr
    assert "rejected CLI-BAD-2:" in refused.stderr and "not a readable DICOM" in refused.stderr

    # a folder that does not exist: refused before anything is contacted
    gone = tmp_path / "gone"
    shutil.rmtree(gone, ignore_errors=True)
    absent = await invoke(["ingest", str(gone), *state])
    assert absent.exit_code == 2

    assert studies(stack) == before
