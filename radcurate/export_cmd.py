"""`radcurate export RELEASE DIR`: the public part of a release (DICOM + labels CSV + dataset
card + manifest) written to a folder, every byte checked against the manifest's sha256.

The manifest itself is checked against the digest the release event recorded, so a tampered or
half-written bucket is detected rather than copied.
"""

from __future__ import annotations

import asyncio
import hashlib
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
WRITE_BUFFER = 1 << 20  # bytes of a file held before they are hashed and written


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
    """Write the released files under `target`, laid out as in the bucket below the release prefix.
    `target` appears only once every file is written and verified; on any failure (a checksum that
    differs, a key outside the folder, the store not answering) nothing is left behind."""
    manifest_bytes = store.get_bytes(bucket, release["manifest_key"])
    if sha256_hex(manifest_bytes) != release["manifest_sha256"]:
        raise ChecksumError(f"{release['manifest_key']}: sha256 differs from the released manifest's")
    manifest = json.loads(manifest_bytes)
    prefix = release["manifest_key"].rsplit("/", 1)[0] + "/"
    entries = sorted(manifest["files"].items()) + [(o["key"], o["sha256"]) for o in manifest["released"]["objects"]]
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)

    def fetch(entry: tuple[tuple[str, str], Path]) -> None:
        (key, digest), path = entry
        # Streamed to its file as it arrives, hashed on the way, in pieces of up to WRITE_BUFFER:
        # an image is never held whole (real radiographs are 5-20 MB, FETCH_WORKERS at once),
        # and a typical one is still hashed and written in one go each (every hash update and
        # write of a piece lets go of the GIL and queues to get it back behind the other fetches).
        hasher = hashlib.sha256()
        pending: list[bytes] = []
        held = 0
        with path.open("wb") as fp:
            def flush() -> None:
                nonlocal held
                piece = b"".join(pending)
                hasher.update(piece)
                fp.write(piece)
                pending.clear()
                held = 0

            def sink(chunk: bytes) -> None:
                nonlocal held
                pending.append(chunk)
                held += len(chunk)
                if held >= WRITE_BUFFER:
                    flush()
            store.read_into(bucket, key, sink)
            flush()
        if hasher.hexdigest() != digest:
            raise ChecksumError(f"{key}: sha256 {hasher.hexdigest()} differs from the manifest's {digest}")

    try:
        # Every path checked before any GET, and each folder made once (not once per file, in
        # the fetching threads: a release's images share a few folders).
        paths = [inside(staging, key.removeprefix(prefix)) for key, _ in entries]
        for folder in sorted({path.parent for path in paths}):
            folder.mkdir(parents=True, exist_ok=True)
        # One GET per file, each a round trip to the store: several at once (a release is ~100-1,000 files).
        with progress.current().task("export", total=len(entries), unit="files") as task, \
                ThreadPoolExecutor(max_workers=FETCH_WORKERS) as pool:
            for _ in pool.map(fetch, zip(entries, paths, strict=True)):
                task.advance()
        (staging / "manifest.json").write_bytes(manifest_bytes)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # no half-written folder left for a researcher to trust
        raise
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
