"""`radcurate manifests collect`: delete instance manifests no event references (left by ingests
whose transaction failed), through the gateway's admin API (`/api/v1/admin/manifests/collect`).

Exit status: 0 done, 1 the gateway refused or is not running, 2 bad arguments.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from radcurate.client import Gateway, GatewayError
from radcurate.stack import local
from radcurate.stack.procs import StackError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Instance manifests in the object store.")
PATH = "/api/v1/admin/manifests/collect"


async def _collect(state_dir: Path, body: dict) -> dict:
    state = local.require_running(state_dir)
    api = Gateway(state["gateway_url"], state["admin_token"])
    try:
        return (await api.request("POST", PATH, json=body)).json()
    finally:
        await api.aclose()


@app.command("collect")
def collect(grace_minutes: Annotated[int, typer.Option(min=5, help="Keep manifests younger than this.")] = 24 * 60,
            dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would go; delete nothing.")] = False,
            as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
            state_dir: Annotated[Path, typer.Option("--state-dir")] = Path(".radcurate")) -> None:
    """Delete the manifests no study references that are older than the grace period (never one
    a study's report-ingested event names)."""
    try:
        found = asyncio.run(_collect(state_dir, {"grace_minutes": grace_minutes, "dry_run": dry_run}))
    except (StackError, GatewayError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    for key in found["deleted"]:
        typer.echo(key)
    typer.echo(f"{'would delete' if dry_run else 'deleted'} {len(found['deleted'])}; kept {found['referenced']}"
               f" referenced, {found['recent']} younger than {grace_minutes} min, {found['unrecorded']} of studies"
               " ingested before manifest keys were recorded")
