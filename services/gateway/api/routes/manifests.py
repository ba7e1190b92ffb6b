"""Operators: collect instance manifests no event references (`radcurate manifests collect`)."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import APIRouter
from pydantic import BaseModel, Field

from services.gateway import manifest_gc
from services.gateway.api.models import RequestBody
from services.gateway.auth import Admin
from services.gateway.deps import Res

router = APIRouter(prefix="/api/v1/admin/manifests", tags=["operations"])
log = logging.getLogger(__name__)


class CollectIn(RequestBody):
    grace_minutes: int = Field(24 * 60, ge=5, description="Keep manifests written less than this long ago: an"
                               " ingest between writing its manifest and committing is that young.")
    dry_run: bool = Field(False, description="List what would be deleted; delete nothing.")


class CollectOut(BaseModel):
    deleted: list[str]
    dry_run: bool
    referenced: int
    recent: int
    unrecorded: int


@router.post("/collect")
async def collect_manifests(body: CollectIn, user: Admin, res: Res) -> CollectOut:
    """Delete the manifests under `manifests/` that no study references, older than the grace
    period; never one a study's row names, nor any of a study that predates recorded keys."""
    found = await manifest_gc.collect(res.pool, res.store, res.settings.objects_bucket,
                                      grace=timedelta(minutes=body.grace_minutes), dry_run=body.dry_run)
    log.info("manifest collection by %s: %s %d (dry run: %s), kept %d referenced, %d recent, %d unrecorded",
             user.user_id, "would delete" if body.dry_run else "deleted", len(found.deleted), body.dry_run,
             found.referenced, found.recent, found.unrecorded)
    return CollectOut(deleted=found.deleted, dry_run=body.dry_run, referenced=found.referenced, recent=found.recent,
                      unrecorded=found.unrecorded)
