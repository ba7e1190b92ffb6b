"""The one base class for request bodies the gateway accepts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class RequestBody(BaseModel):
    """A JSON request body. Unknown fields are refused (422 naming them) rather than ignored: a
    client that sends `added` where the API reads `added_labels` must hear about it, not have a
    reader's corrections silently dropped."""

    model_config = ConfigDict(extra="forbid")


def iso_row(row: dict[str, Any]) -> dict[str, Any]:
    """A database row as JSON can carry it: timestamps as ISO 8601 strings."""
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
