"""FastAPI dependencies shared by the gateway's routes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from services.common.runtime import Resources

if TYPE_CHECKING:  # app.py imports the routes that import this module
    from services.gateway.app import GatewaySettings


async def resources(request: Request) -> Resources[GatewaySettings]:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per request.
    return request.app.state.resources  # type: ignore[no-any-return]


# Quoted: a forward reference at run time (FastAPI only reads the Depends), checked by mypy.
Res = Annotated[Resources["GatewaySettings"], Depends(resources)]
