"""A stored vote's judgement, as the API shows it: the judgement's own fields (e.g. `verdict` and
label corrections, or `grades`) next to the vote's, whichever protocol defined them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Columns votes had before judgements were stored whole; a row from then has them instead.
LEGACY_COLUMNS = ("verdict", "added_labels", "removed_labels", "grades")
SELECT = "v.judgement, " + ", ".join(f"v.{c}" for c in LEGACY_COLUMNS)


def fields_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """The judgement's fields (its tag dropped) from a row selected with `SELECT`."""
    judgement = row.get("judgement")
    if judgement is None:
        return {c: row[c] for c in LEGACY_COLUMNS if row.get(c) is not None}
    return {k: v for k, v in judgement.items() if k != "protocol"}


def judgement_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row with the judgement's fields in place of its storage columns."""
    rest = {k: v for k, v in row.items() if k != "judgement" and k not in LEGACY_COLUMNS}
    return {**rest, **fields_of(row)}
