"""A simple hanging protocol for a chest study of several images: frontal on the left, lateral
on the right. The view of an instance comes from its ViewPosition, else from the words of its
SeriesDescription ("CHEST PA", "LAT", ...); ImageLaterality plays no part on a chest film."""

from __future__ import annotations

import re

from pydantic import BaseModel

FRONTAL, LATERAL = "frontal", "lateral"
_LATERAL = {"LL", "RL", "LAT", "LATERAL", "LLD", "RLD"}
_FRONTAL = {"PA", "AP", "FRONTAL", "APS", "PAS"}


class HungView(BaseModel):
    """One image of the study as hung: its index for the image endpoint, and where it goes."""

    instance: int
    view: str
    image_url: str


def view_of(view_position: str | None, series_description: str | None) -> str | None:
    """frontal, lateral, or None when neither attribute says."""
    words = {(view_position or "").strip().upper()} | set(re.findall(r"[A-Z]+", (series_description or "").upper()))
    if words & _LATERAL:
        return LATERAL
    if words & _FRONTAL:
        return FRONTAL
    return None


def hang(objects: list[dict], image_url: str) -> list[HungView]:
    """The first frontal and the first lateral image, in that order; empty unless the study has
    both (a single-image study is shown as it always was). `objects` in the image endpoint's
    order, each with `view_position` (may be None) and `series_description`."""
    first: dict[str, int] = {}
    for i, o in enumerate(objects):
        view = view_of(o.get("view_position"), o.get("series_description"))
        if view and view not in first:
            first[view] = i
    if len(first) < 2:
        return []
    return [HungView(instance=first[v], view=v, image_url=f"{image_url}?instance={first[v]}")
            for v in (FRONTAL, LATERAL)]
