"""A multi-series study (e.g. a spine MRI): its series in reading order, and each instance rendered,
so the reviewer page can scroll a series slice by slice and preload the neighbours."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from services.gateway.access import own_read
from services.gateway.api.routes.studies import shown_image
from services.gateway.auth import CurrentUser
from services.gateway.deps import Res
from services.gateway.problems import Problem
from services.gateway.repo import series

router = APIRouter(prefix="/api/v1/studies", tags=["studies"])
# Reading order of the competition's series types; unknown descriptions come last.
SERIES_ORDER = ("sagittal t1", "sagittal t2/stir", "axial t2")


class SeriesView(BaseModel):
    series_instance_uid: str
    series_description: str
    instances: list[int]  # instance numbers, ascending
    pixel_spacing: tuple[float, float] | None
    image_url_template: str  # replace {n} with an instance number


def _rank(description: str) -> int:
    d = description.strip().lower()
    return SERIES_ORDER.index(d) if d in SERIES_ORDER else len(SERIES_ORDER)


@router.get("/{study_id}/series")
async def series_list(study_id: str, user: CurrentUser, res: Res) -> list[SeriesView]:
    """The study's series (Sagittal T1, Sagittal T2/STIR, Axial T2 first), instances in order."""
    async with res.pool.connection() as conn:
        await own_read(conn, user, study_id)
        rows = await series.of_study(conn, study_id)
    if not rows:
        raise Problem(404, f"no study {study_id!r}")
    rows.sort(key=lambda r: (_rank(r["series_description"]), r["series_description"], r["series_instance_uid"]))
    base = f"/api/v1/studies/{study_id}/series"
    return [SeriesView(series_instance_uid=r["series_instance_uid"], series_description=r["series_description"],
                       instances=r["instances"], pixel_spacing=_spacing(r["pixel_spacing"]),
                       image_url_template=f"{base}/{r['series_instance_uid']}/instances/{{n}}/image")
            for r in rows]


def _spacing(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    row, col = (float(v) for v in text.strip("[]").split(","))
    return row, col


async def instance_key(res: Res, study_id: str, series_uid: str, number: int) -> str | None:
    """The object key of one instance, or None when the series has no such instance."""
    async with res.pool.connection() as conn:
        return await series.instance_key(conn, study_id, series_uid, number)


@router.get("/{study_id}/series/{series_uid}/instances/{number}/image")
async def instance_image(study_id: str, series_uid: str, number: int, user: CurrentUser, res: Res,
                         window_center: float | None = None,
                         window_width: Annotated[float | None, Query(gt=0)] = None,
                         size: Annotated[int, Query(ge=32, le=4096)] = 1024,
                         format: Literal["png", "jpeg"] = "png") -> Response:
    """One instance rendered with window/level at its native size at most (so the page's pixel
    coordinates are the image's own), from its derivatives (object keys are content hashes)."""
    async with res.pool.connection() as conn:
        await own_read(conn, user, study_id)
    key = await instance_key(res, study_id, series_uid, number)
    if key is None:
        raise Problem(404, f"study {study_id!r} has no instance {number} in series {series_uid!r}")
    body = await shown_image(res, key.rsplit("/", 1)[1], key, center=window_center, width=window_width,
                             size=size, fmt=format)
    return Response(body, media_type=f"image/{format}", headers={"Cache-Control": "private, max-age=3600"})
