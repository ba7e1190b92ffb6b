"""`radcurate export RELEASE DIR`: the public part of a release (DICOM + labels CSV + dataset
card + manifest) written to a folder, every byte checked against the manifest's sha256.

The manifest itself is checked against the digest the release event recorded, so a tampered or
half-written bucket is detected rather than copied.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated

import typer

from radcurate import progress
from radcurate.client import Gateway, GatewayError
from radcurate.stack import local
from radcurate.stack.procs import StackError
from services.common.objectstore import ObjectStore, sha256_hex

FETCH_WORKERS = 8


class ChecksumError(RuntimeError):
    """An object's bytes differ from the digest the manifest (or the release event) records."""


class UnsafePath(ValueError):
    """A manifest key that would be written outside the export folder."""


def inside(root: Path, relative: str) -> Path:
    """`root / relative`, refused when `relative` is absolute or climbs out with '..'."""
    parts = Path(relative).parts
    if not parts or Path(relative).is_absolute() or ".." in parts:
        raise UnsafePath(f"refusing to write {relative!r}: not a path inside the export folder")
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise UnsafePath(f"refusing to write {relative!r}: it resolves outside the export folder")
    return path


def export_release(store: ObjectStore, bucket: str, release: dict, target: Path) -> dict[str, int]:
    """Write the released files under `target`, laid out as in the bucket below the release prefix."""
    manifest_bytes = store.get_bytes(bucket, release["manifest_key"])
    if sha256_hex(manifest_bytes) != release["manifest_sha256"]:
        raise ChecksumError(f"{release['manifest_key']}: sha256 differs from the released manifest's")
    manifest = json.loads(manifest_bytes)
    prefix = release["manifest_key"].rsplit("/", 1)[0] + "/"
    entries = sorted(manifest["files"].items()) + [(o["key"], o["sha256"]) for o in manifest["released"]["objects"]]
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)

    def fetch(entry: tuple[str, str]) -> None:
        key, digest = entry
        data = store.get_bytes(bucket, key)
        if sha256_hex(data) != digest:
            raise ChecksumError(f"{key}: sha256 {sha256_hex(data)} differs from the manifest's {digest}")
        path = inside(staging, key.removeprefix(prefix))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    # One GET per file, each a round trip to the store: several at once (a release is ~100-1,000 files).
    with progress.current().task("export", total=len(entries), unit="files") as task, \
            ThreadPoolExecutor(max_workers=FETCH_WORKERS) as pool:
        for _ in pool.map(fetch, entries):
            task.advance()
    (staging / "manifest.json").write_bytes(manifest_bytes)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # the folder appears only once every file is verified
    return {"files": len(manifest["files"]) + 1, "objects": len(manifest["released"]["objects"])}


async def _release(state: dict, release_id: str) -> dict:
    api = Gateway(state["gateway_url"], state["admin_token"])
    try:
        return await api.release(release_id)
    finally:
        await api.aclose()


def export(release_id: Annotated[str, typer.Argument(help="The release id.")],
           out_dir: Annotated[Path, typer.Argument(file_okay=False, help="Folder to write (replaced).")],
           state_dir: Annotated[Path, typer.Option("--state-dir")] = Path(".radcurate"),
           quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False) -> None:
    """Write a release's public set (DICOM, labels CSV, dataset card, manifest) to a folder."""
    from radcurate.demo import store_for

    try:
        state = local.require_running(state_dir)
        release = asyncio.run(_release(state, release_id))
        if release.get("status") != "released":
            raise StackError(f"release {release_id!r} is {release.get('status')}, not released")
        with progress.use(quiet):
            counts = export_release(store_for(state), state["buckets"]["public"], release, out_dir)
    except (StackError, GatewayError, ChecksumError, UnsafePath) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wrote {counts['objects']} DICOM objects and {counts['files']} files to {out_dir}, all verified")
