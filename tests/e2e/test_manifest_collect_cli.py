"""`radcurate manifests collect` against a running gateway: the command line calls the admin API
(`tests/integration/test_manifest_gc.py` proves what is deleted and kept on real S3; this proves
the command's wiring, bounds and exit statuses)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radcurate.cli import app
from radcurate.demo import store_for
from radcurate.stack import local
from services.common import manifests
from services.common.contracts import DicomObject

pytestmark = pytest.mark.e2e
runner = CliRunner()


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state_dir = tmp_path_factory.mktemp("gc-stack")
    local.up(state_dir, services_to_run=("gateway",))
    yield state_dir
    local.down(state_dir)


def collect(stack_dir: Path, *args: str):
    return runner.invoke(app, ["manifests", "collect", *args, "--state-dir", str(stack_dir)])


def test_the_command_collects_through_the_gateway_and_keeps_what_is_young(stack_dir: Path, tmp_path: Path):
    state = local.load(stack_dir.resolve())
    store, bucket = store_for(state), state["buckets"]["objects"]
    orphan = manifests.put_objects(store, bucket, "CLI-GONE", [DicomObject(
        object_key="dicom/sha256/00/x", sha256="00" * 32, sop_instance_uid="1.2.3", series_instance_uid="1.2.4")]).key

    dry = collect(stack_dir, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    found = json.loads(dry.output)
    assert found["dry_run"] is True and orphan not in found["deleted"] and found["recent"] >= 1
    real = collect(stack_dir, "--grace-minutes", "5")
    assert real.exit_code == 0, real.output
    assert "deleted 0; kept 0 referenced, 1 younger than 5 min" in real.output
    assert store.exists(bucket, orphan)
    assert collect(stack_dir, "--grace-minutes", "1").exit_code == 2  # under the bound: refused before any call
    stopped = runner.invoke(app, ["manifests", "collect", "--state-dir", str(tmp_path / "none")])
    assert stopped.exit_code == 1 and "error:" in stopped.output
