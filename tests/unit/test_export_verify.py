"""`radcurate export RELEASE DIR` as a researcher runs it: every file verified against the
manifest's sha256 as it is written, a clear error and exit code 1 on a checksum that differs, and
then no folder at all (neither DIR nor a half-written DIR.partial beside it); images streamed to
their files, never held whole in memory."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest
from typer.testing import CliRunner

from radcurate import demo, export_cmd
from radcurate.cli import app
from radcurate.export_cmd import ChecksumError, export_release
from services.common.objectstore import sha256_hex
from tests.unit.test_identifiers_and_export_paths import DictStore

PREFIX = "releases/r1"


def _release(objects: dict[str, bytes], tamper: str | None = None) -> tuple[DictStore, dict]:
    """A public set in a fake store: labels.csv, two images and the manifest (whose digests are
    of `objects`); `tamper`: that key's stored bytes differ from what the manifest records."""
    files = {f"{PREFIX}/labels.csv": b"study_id,a\nS1,1\n"}
    manifest = {"files": {k: sha256_hex(v) for k, v in files.items()},
                "released": {"objects": [{"key": k, "sha256": sha256_hex(v)} for k, v in objects.items()]}}
    manifest_bytes = json.dumps(manifest).encode()
    stored = {**files, **objects, f"{PREFIX}/manifest.json": manifest_bytes}
    if tamper is not None:
        stored[tamper] = stored[tamper][:-1] + b"X"
    return DictStore(stored), {"release_id": "r1", "status": "released", "manifest_key": f"{PREFIX}/manifest.json",
                               "manifest_sha256": sha256_hex(manifest_bytes)}


IMAGES = {f"{PREFIX}/images/S1/1.2/1.2.3.dcm": b"DICM" * 5000, f"{PREFIX}/images/S2/1.4/1.4.5.dcm": b"DICM" * 7000}


def test_an_export_writes_every_file_verified(tmp_path: Path):
    store, release = _release(IMAGES)
    counts = export_release(store, "public", release, tmp_path / "out")  # type: ignore[arg-type]
    assert counts == {"files": 2, "objects": 2}
    for key, data in IMAGES.items():
        assert (tmp_path / "out" / key.removeprefix(f"{PREFIX}/")).read_bytes() == data
    assert (tmp_path / "out" / "manifest.json").exists() and (tmp_path / "out" / "labels.csv").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_bad_checksum_fails_the_cli_with_exit_1_a_clear_error_and_no_folder(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch):
    bad = f"{PREFIX}/images/S2/1.4/1.4.5.dcm"
    store, release = _release(IMAGES, tamper=bad)
    monkeypatch.setattr(export_cmd.local, "require_running", lambda state_dir: {"buckets": {"public": "public"}})

    async def released(state: dict, release_id: str) -> dict:
        return release
    monkeypatch.setattr(export_cmd, "_release", released)
    monkeypatch.setattr(demo, "store_for", lambda state: store)
    out = tmp_path / "export"
    result = CliRunner().invoke(app, ["export", "r1", str(out), "--quiet"])
    assert result.exit_code == 1
    assert f"error: {bad}: sha256" in result.output and "differs from the manifest's" in result.output
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a half-written export.partial


def test_an_export_that_fails_part_way_leaves_nothing_and_a_retry_succeeds(tmp_path: Path):
    store, release = _release(IMAGES, tamper=f"{PREFIX}/images/S1/1.2/1.2.3.dcm")
    with pytest.raises(ChecksumError, match="1.2.3.dcm: sha256"):
        export_release(store, "public", release, tmp_path / "out")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    store, release = _release(IMAGES)
    export_release(store, "public", release, tmp_path / "out")  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_images_are_streamed_to_their_files_not_held_whole(tmp_path: Path):
    big = {f"{PREFIX}/images/S1/1.2/big.dcm": bytes(range(256)) * (128 * 1024)}  # 32 MiB
    store, release = _release(big)
    tracemalloc.start()
    try:
        export_release(store, "public", release, tmp_path / "out")  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "out" / "images/S1/1.2/big.dcm").stat().st_size == 32 << 20
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB while exporting a 32 MiB image"
