"""`radcurate dlq list|show|replay`: dead letters of the running stack, through the gateway's
admin API (`/api/v1/admin/dead-letters`), so the command line does exactly what an operator's
HTTP call does — and each replay is recorded by the gateway.

Exit status: 0 done, 1 a letter was not found or could not be replayed, 2 bad arguments.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from radcurate.client import Gateway, GatewayError
from radcurate.stack import local
from radcurate.stack.procs import StackError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Dead letters: list them, read one, replay them once the cause is fixed.")
PATH = "/api/v1/admin/dead-letters"
StateDir = Annotated[Path, typer.Option("--state-dir", help="Where the local stack keeps its state.")]
Topic = Annotated[str | None, typer.Option("--topic", help="Original topic (without .dlq).")]
Since = Annotated[str | None, typer.Option("--since", help="ISO 8601 time; letters written at or after it.")]
Id = Annotated[str | None, typer.Option("--id", help="A letter id, or the id of the event it holds.")]


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _since(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"--since {value!r} is not an ISO 8601 time", 2)
    if moment.tzinfo is None:
        _fail("--since needs a time zone, e.g. 2026-01-31T08:00:00Z", 2)
    return moment.isoformat()


async def _call(state_dir: Path, method: str, path: str, **kwargs) -> dict | list:
    state = local.require_running(state_dir)
    api = Gateway(state["gateway_url"], state["admin_token"])
    try:
        return (await api.request(method, path, **kwargs)).json()
    finally:
        await api.aclose()


def _run(state_dir: Path, method: str, path: str, **kwargs) -> dict | list:
    try:
        return asyncio.run(_call(state_dir, method, path, **kwargs))
    except (StackError, GatewayError) as exc:
        _fail(str(exc))
    raise AssertionError("unreachable")


def _query(topic: str | None, since: str | None, letter_id: str | None) -> dict:
    return {k: v for k, v in {"topic": topic, "since": _since(since), "id": letter_id}.items() if v}


@app.command("list")
def list_letters(topic: Topic = None, since: Since = None, letter_id: Id = None,
                 as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
                 state_dir: StateDir = Path(".radcurate")) -> None:
    """One line per dead letter: when, its id, where from, why, how often replayed."""
    letters = _run(state_dir, "GET", PATH, params=_query(topic, since, letter_id))
    if as_json:
        typer.echo(json.dumps(letters, indent=2))
        return
    for item in letters:
        typer.echo(f"{item['failed_at'][:19]}  {item['event_id']}  {item['original_topic']}  {item['service']}"
                   f"  replays={len(item['replays'])}  {item['error'][:120]}")
    typer.echo(f"{len(letters)} dead letter(s)")


@app.command("show")
def show(letter_id: Id = None, state_dir: StateDir = Path(".radcurate")) -> None:
    """One letter in full (JSON): error, traceback, the original message, its replays."""
    if not letter_id:
        _fail("--id is required", 2)
    typer.echo(json.dumps(_run(state_dir, "GET", f"{PATH}/{letter_id}"), indent=2))


@app.command("replay")
def replay(topic: Topic = None, since: Since = None, letter_id: Id = None,
           reason: Annotated[str, typer.Option(help="What was fixed; recorded with the replay.")] = "",
           state_dir: StateDir = Path(".radcurate")) -> None:
    """Republish the original events (same event_id) of the matching letters. With --topic or
    --since, letters already replayed are left alone; name one with --id to replay it again."""
    if not (letter_id or topic):
        _fail("name the letters to replay: --id, or --topic (and --since)", 2)
    if letter_id:
        ids = [letter_id]
    else:
        letters = _run(state_dir, "GET", PATH, params=_query(topic, since, None))
        ids = [i["event_id"] for i in letters if not i["replays"]]
    failed = 0
    for one in ids:
        try:
            done = asyncio.run(_call(state_dir, "POST", f"{PATH}/{one}/replay", json={"reason": reason}))
        except (StackError, GatewayError) as exc:
            typer.secho(f"error: {one}: {exc}", fg=typer.colors.RED, err=True)
            failed += 1
            continue
        typer.echo(f"replayed {done['original_event_id']} to {done['original_topic']} ({done['replay_id']})")
    typer.echo(f"{len(ids) - failed} replayed, {failed} failed")
    if failed:
        raise typer.Exit(1)
