"""Released benchmarks as a curator sees them: the list, and the public set's files to download."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Query

from services.common.listener import Listener
from services.common.objectstore import sha256_hex
from services.gateway.api.models import iso_row
from services.gateway.auth import Curator
from services.gateway.deps import Res
from services.gateway.problems import Problem
from services.gateway.repo import releases

# Where the process's release listener is kept in its Resources' `extra`.
RELEASE_LISTENER = "release_listener"

router = APIRouter(prefix="/api/v1", tags=["curation"])


@router.get("/releases")
async def list_releases(_: Curator, res: Res) -> list[dict]:
    """Every release requested, newest first, with its counts once consensus has written it."""
    async with res.pool.connection() as conn:
        return [iso_row(r) for r in await releases.all_releases(conn)]


@router.get("/releases/{release_id}")
async def get_release(release_id: str, _: Curator, res: Res,
                      wait: Annotated[float, Query(ge=0, le=60, description=(
                          "Seconds to wait for the release to be released before answering (answered"
                          " the moment it is; 0: at once)."))] = 0) -> dict:
    """One release: its status, counts and manifest digest."""
    if wait > 0:  # its first read answers an unknown or released one at once
        row = await releases.wait_released(release_listener(res), res.pool, release_id, wait)
    else:
        async with res.pool.connection() as conn:
            row = await releases.get(conn, release_id)
    if row is None:
        raise Problem(404, f"no release {release_id!r}")
    return iso_row(row)


def release_listener(res: Res) -> Listener:
    """The process's release listener, made on the first wait (a gateway nobody waits on holds no
    LISTEN connection); closed with the app (app.py `_stop`)."""
    listener = res.extra.get(RELEASE_LISTENER)
    if listener is None:
        listener = res.extra[RELEASE_LISTENER] = releases.release_listener(
            res.settings.database_url.get_secret_value())
    return listener  # type: ignore[no-any-return]


@router.get("/releases/{release_id}/files")
async def public_files(release_id: str, _: Curator, res: Res) -> dict:
    """Short-lived links to every file of the public set (never the holdout): the manifest, the
    labels, the dataset card and the images. The manifest is checked against the checksum the
    release event carried, so a link list is only handed out for the release as written."""
    async with res.pool.connection() as conn:
        row = await releases.manifest_of(conn, release_id)
    if row is None:
        raise Problem(404, f"no release {release_id!r}")
    if row["status"] != "released":
        raise Problem(409, f"release {release_id!r} is {row['status']}; its files are not written yet")
    bucket, seconds = res.settings.public_bucket, res.settings.presigned_url_seconds
    body = await res.store.aget_bytes(bucket, row["manifest_key"])
    if sha256_hex(body) != row["manifest_sha256"]:
        raise Problem(409, f"release {release_id!r}: the stored manifest does not match its checksum")
    manifest = json.loads(body)
    keys = [row["manifest_key"], *sorted(k for k in manifest["files"] if k != row["manifest_key"]),
            *(o["key"] for o in manifest["released"]["objects"])]
    urls = await asyncio.to_thread(lambda: [res.store.presigned_get(bucket, k, seconds) for k in keys])
    return {"release_id": release_id, "expires_in_seconds": seconds,
            "files": [{"key": k, "name": k.removeprefix(f"releases/{release_id}/"), "url": u}
                      for k, u in zip(keys, urls, strict=True)]}
