"""FastAPI dependencies shared by the gateway's routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.common.runtime import Resources


def resources(request: Request) -> Resources:
    return request.app.state.resources


Res = Annotated[Resources, Depends(resources)]
