"""The one base class for request bodies the gateway accepts."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RequestBody(BaseModel):
    """A JSON request body. Unknown fields are refused (422 naming them) rather than ignored: a
    client that sends `added` where the API reads `added_labels` must hear about it, not have a
    reader's corrections silently dropped."""

    model_config = ConfigDict(extra="forbid")
