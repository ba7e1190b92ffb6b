"""Commands that are thin clients of the gateway API, for scripting:
`radcurate users add|list|revoke`, `sample`, `release`, `adjudicate` (curators) and `evaluate` (evaluators).

Which gateway and whose token: `--gateway URL --token T` (or RADCURATE_GATEWAY_URL /
RADCURATE_TOKEN), else the local stack in `--state-dir` with its admin token. An API error
(problem+json) is printed as `error: HTTP <status>: <detail>` and the command exits 1; bad
command-line input exits 2 before anything is sent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer

from radcurate.client import Gateway, GatewayError
from radcurate.stack import local
from radcurate.stack.procs import StackError

T = TypeVar("T")
PROTOCOLS = {"cxr": "cxr-label-verification", "lumbar": "lumbar-grading"}
ROLES = ("reviewer", "curator", "evaluator", "admin")

GatewayUrl = Annotated[str | None, typer.Option(
    "--gateway", envvar="RADCURATE_GATEWAY_URL", help="Gateway base URL; default: the local stack's.")]
Token = Annotated[str | None, typer.Option(
    "--token", envvar="RADCURATE_TOKEN", help="Bearer token; default: the local stack's admin token.")]
StateDir = Annotated[Path, typer.Option("--state-dir", help="The local stack's state (when no --gateway).")]
DEFAULT_STATE = Path(".radcurate")
RELEASE_WAIT = 20.0  # seconds one `release --wait` request waits on the gateway (it allows 60)
ProtocolOpt = Annotated[str, typer.Option(help="cxr or lumbar")]


def fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def connection(gateway: str | None, token: str | None, state_dir: Path) -> tuple[str, str]:
    """(base URL, token): explicit options or environment first, the local stack's state for the rest."""
    if gateway and token:
        return gateway, token
    try:
        state = local.require_running(state_dir)
    except StackError as exc:
        fail(f"{exc}, or pass --gateway URL --token TOKEN (RADCURATE_GATEWAY_URL / RADCURATE_TOKEN)")
    return gateway or state["gateway_url"], token or state["admin_token"]


def call(gateway: str | None, token: str | None, state_dir: Path, work: Callable[[Gateway], Awaitable[T]]) -> T:
    """Run `work` against the gateway; API and connection errors become a message and exit 1."""
    url, tok = connection(gateway, token, state_dir)

    async def run() -> T:
        api = Gateway(url, tok)
        try:
            return await work(api)
        finally:
            await api.aclose()

    try:
        return asyncio.run(run())
    except GatewayError as exc:
        retry = exc.problem.get("retry_after_seconds")
        fail(f"{exc}{f' (retry after {retry} s)' if retry else ''}")
    except httpx.HTTPError as exc:
        fail(f"cannot reach the gateway at {url}: {exc.__class__.__name__} {exc}".rstrip())


def protocol_id(name: str) -> str:
    if name in PROTOCOLS.values():
        return name
    if name not in PROTOCOLS:
        fail(f"unknown protocol {name!r}: cxr or lumbar", 2)
    return PROTOCOLS[name]


def plan_from(plan_file: Path | None, **overrides: Any) -> dict:
    """A plan from a JSON file, with the options given on the command line on top."""
    plan: dict = {}
    if plan_file is not None:
        try:
            plan = json.loads(plan_file.read_text())
        except (OSError, ValueError) as exc:
            fail(f"cannot read the plan {plan_file}: {exc}", 2)
        if not isinstance(plan, dict):
            fail(f"the plan {plan_file} is not a JSON object", 2)
    return {**plan, **{k: v for k, v in overrides.items() if v is not None}}


def print_json(body: Any) -> None:
    typer.echo(json.dumps(body, indent=2, sort_keys=True, default=str))


# --- users ------------------------------------------------------------------------------------

users_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke users and their tokens.")


@users_app.command("add")
def users_add(user_id: Annotated[str, typer.Argument(help="Letters, digits, . _ - (at most 64).")],
              role: Annotated[str, typer.Option(help="reviewer, curator, evaluator or admin")] = "reviewer",
              name: Annotated[str, typer.Option("--name", help="Display name.")] = "",
              team: Annotated[str | None, typer.Option(help="An evaluator's team (required for evaluators).")] = None,
              gateway: GatewayUrl = None, token: Token = None, state_dir: StateDir = DEFAULT_STATE) -> None:
    """Create a user and print their token (on stdout, alone, once: only its hash is stored)."""
    if role not in ROLES:
        fail(f"unknown role {role!r}: one of {', '.join(ROLES)}", 2)
    issued = call(gateway, token, state_dir, lambda api: api.create_user(user_id, role, name, team))
    typer.secho(f"created {role} {user_id}; the token below is shown only this once", err=True)
    typer.echo(issued)


@users_app.command("list")
def users_list(role: Annotated[str | None, typer.Option(help="Only this role.")] = None,
               as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
               gateway: GatewayUrl = None, token: Token = None, state_dir: StateDir = DEFAULT_STATE) -> None:
    """Active users (tokens are never shown again)."""
    if role is not None and role not in ROLES:
        fail(f"unknown role {role!r}: one of {', '.join(ROLES)}", 2)
    params = {"role": role} if role else {}
    users = call(gateway, token, state_dir,
                 lambda api: _json(api.request("GET", "/api/v1/users", params=params)))
    if as_json:
        print_json(users)
        return
    typer.echo(f"{'user':<24} {'role':<10} name")
    for u in users:
        typer.echo(f"{u['user_id']:<24} {u['role']:<10} {u['display_name']}")


@users_app.command("revoke")
def users_revoke(user_id: str, gateway: GatewayUrl = None, token: Token = None,
                 state_dir: StateDir = DEFAULT_STATE) -> None:
    """Deactivate a user: their token stops working (within seconds in every gateway process)."""
    call(gateway, token, state_dir, lambda api: api.request("DELETE", f"/api/v1/users/{user_id}"))
    typer.echo(f"revoked {user_id}")


async def _json(resp: Awaitable[httpx.Response]) -> Any:
    return (await resp).json()


# --- sampling, release, adjudication ----------------------------------------------------------

def sample(n: Annotated[int | None, typer.Option(min=1, help="Studies to sample.")] = None,
           readers_per_study: Annotated[int | None, typer.Option(min=1)] = None,
           seed: int | None = None,
           plan_file: Annotated[Path | None, typer.Option("--plan", dir_okay=False, exists=True,
                                                            help="Full sampling plan as JSON.")] = None,
           panel: Annotated[str | None, typer.Option(
               help="Comma-separated reader ids; default: every reviewer.")] = None,
           protocol: ProtocolOpt = "cxr",
           wait: Annotated[bool, typer.Option(help="Wait for the sampler's outcome and print it.")] = False,
           timeout: float = 300, as_json: Annotated[bool, typer.Option("--json")] = False,
           gateway: GatewayUrl = None, token: Token = None, state_dir: StateDir = DEFAULT_STATE) -> None:
    """Request a sampling run: the sampler draws studies for review and assigns readers."""
    body = {"plan": plan_from(plan_file, n=n, readers_per_study=readers_per_study, seed=seed),
            "protocol": protocol_id(protocol),
            "panel": [p.strip() for p in panel.split(",") if p.strip()] if panel else None}

    async def work(api: Gateway) -> dict:
        accepted = (await api.request("POST", "/api/v1/sampling-runs", json=body)).json()
        if not wait:
            return accepted
        # The outcome (sampling-completed) and the assignments (review-assigned) come on different
        # topics: the run is complete when both are in.
        return await _poll(lambda: api.sampling_run(accepted["run_id"]),
                           lambda r: r["status"] != "requested" and len(r["studies"]) == (r.get("n_selected") or 0),
                           timeout, f"sampling run {accepted['run_id']}")

    run = call(gateway, token, state_dir, work)
    if as_json:
        print_json(run)
    elif not wait:
        typer.echo(f"requested {run['run_id']} for a panel of {len(run['panel'])}; follow it with"
                   f" GET /api/v1/sampling-runs/{run['run_id']}")
    else:
        typer.echo(f"{run['run_id']}: {run['status']}, {run['n_selected']} of a pool of {run['pool_size']} sampled")
        for quota in run.get("unmet_quotas") or []:
            typer.secho(f"  unmet: {quota}", fg=typer.colors.YELLOW)
        if run["status"] != "completed":
            fail(run.get("error") or "the sampling run failed")


def release(release_id: Annotated[str | None, typer.Option("--id", help="Release id; default: generated.")] = None,
            target_size: Annotated[int | None, typer.Option(min=2)] = None,
            seed: int | None = None,
            plan_file: Annotated[Path | None, typer.Option("--plan", dir_okay=False, exists=True,
                                                             help="Full selection plan as JSON.")] = None,
            protocol: ProtocolOpt = "cxr",
            wait: Annotated[bool, typer.Option(help="Wait until it is released and print the counts.")] = False,
            timeout: float = 300, as_json: Annotated[bool, typer.Option("--json")] = False,
            gateway: GatewayUrl = None, token: Token = None, state_dir: StateDir = DEFAULT_STATE) -> None:
    """Request a release: consensus selects the benchmark from accepted studies and splits it."""
    body = {"plan": plan_from(plan_file, target_size=target_size, seed=seed), "protocol": protocol_id(protocol),
            "release_id": release_id}

    async def work(api: Gateway) -> dict:
        requested = (await api.request("POST", "/api/v1/releases", json=body)).json()
        if not wait:
            return requested
        # Each request waits on the gateway (answered the moment the release commits), so the
        # loop's 0.5 s pause only follows a request that came back unreleased after RELEASE_WAIT.
        deadline = time.monotonic() + timeout
        return await _poll(lambda: api.release(requested["release_id"],
                                               wait=min(RELEASE_WAIT, max(deadline - time.monotonic(), 0.1))),
                           lambda r: r["status"] == "released", timeout, f"release {requested['release_id']}")

    out = call(gateway, token, state_dir, work)
    if as_json:
        print_json(out)
    elif wait:
        typer.echo(f"{out['release_id']}: released {out['released_count']}, holdout {out['holdout_count']};"
                   f" manifest sha256 {out['manifest_sha256']}")
    else:
        typer.echo(f"requested {out['release_id']};"
                   f" `radcurate release --wait` or GET /api/v1/releases/{out['release_id']}")


def adjudicate(study_id: Annotated[str, typer.Argument(help="A decided study (typically flagged).")],
               accept: Annotated[bool | None, typer.Option("--accept/--reject",
                                                              help="Accept into the benchmark, or reject.")] = None,
               labels: Annotated[list[str] | None, typer.Option(
                   "--label", help="A benchmark label of the accepted study (repeat for several).")] = None,
               cells: Annotated[list[str] | None, typer.Option(
                   "--cell", help="A grid protocol's disputed cell: CELL=GRADE, or CELL=GRADE@SERIES_UID,INSTANCE,X,Y"
                                  " with the point (repeat for several).")] = None,
               note: str = "", as_json: Annotated[bool, typer.Option("--json")] = False,
               gateway: GatewayUrl = None, token: Token = None, state_dir: StateDir = DEFAULT_STATE) -> None:
    """Settle a decided study: your ruling becomes its decision, recorded beside the rule's."""
    if accept is None:
        fail("say --accept or --reject", 2)
    body = {"study_id": study_id, "accepted": accept, "labels": labels or [], "note": note}
    if cells:
        body["cells"] = [_cell(text) for text in cells]
    out = call(gateway, token, state_dir, lambda api: _json(api.request("POST", "/api/v1/adjudications", json=body)))
    if as_json:
        print_json(out)
    else:
        typer.echo(f"{out['adjudication_id']}: {'accept' if accept else 'reject'} {study_id}"
                   f"{' with ' + ', '.join(labels) if labels else ''} — requested")


def _cell(text: str) -> dict:
    """`CELL=GRADE[@SERIES_UID,INSTANCE,X,Y]` as the adjudication request's cell (exit 2 if malformed)."""
    cell, _, rest = text.partition("=")
    grade, _, at = rest.partition("@")
    if not cell or not grade:
        fail(f"--cell {text!r}: write CELL=GRADE or CELL=GRADE@SERIES_UID,INSTANCE,X,Y", 2)
    out: dict = {"cell_id": cell, "grade": grade}
    if at:
        parts = at.split(",")
        try:
            series, instance, x, y = parts[0], int(parts[1]), float(parts[2]), float(parts[3])
        except (IndexError, ValueError):
            fail(f"--cell {text!r}: the point is SERIES_UID,INSTANCE,X,Y (instance an integer, x and y numbers)", 2)
        if len(parts) != 4:
            fail(f"--cell {text!r}: the point is SERIES_UID,INSTANCE,X,Y", 2)
        out["point"] = {"series_instance_uid": series, "instance_number": instance, "x": x, "y": y}
    return out


async def _poll(get: Callable[[], Awaitable[dict]], done: Callable[[dict], bool], timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        row = await get()
        if done(row):
            return row
        if time.monotonic() > deadline:
            fail(f"timed out after {timeout:.0f}s waiting for {what} (status {row.get('status')})")
        await asyncio.sleep(0.5)


# --- evaluation ---------------------------------------------------------------------------------

def evaluate(release_id: Annotated[str, typer.Argument(help="A release open for evaluation.")],
             predictions: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Predictions CSV.")],
             validate_only: Annotated[bool, typer.Option("--validate-only",
                                                         help="Only check the file (free: no quota used).")] = False,
             as_json: Annotated[bool, typer.Option("--json")] = False,
             gateway: GatewayUrl = None, token: Token = None, state_dir: StateDir = DEFAULT_STATE) -> None:
    """Check a predictions file against a release's holdout format, then (unless --validate-only)
    submit it to be scored with an evaluator's token. Refusals list every problem; exit 1."""
    data = predictions.read_bytes()
    path = "/api/v1/evaluations/validate" if validate_only else "/api/v1/evaluations"

    async def work(api: Gateway) -> dict:
        resp = await api.request("POST", path, params={"release_id": release_id}, content=data,
                                 headers={"Content-Type": "text/csv"})
        return resp.json()

    out = call(gateway, token, state_dir, work)
    if as_json:
        print_json(out)
    elif validate_only:
        typer.echo(f"valid: {out['rows']} rows for {release_id}; no quota used"
                   + (f" (already submitted as {out['already_submitted_as']})" if out["already_submitted_as"] else ""))
    else:
        macro = (out.get("metrics") or {}).get("macro", {})
        main = macro.get("auroc", (out.get("metrics") or {}).get("score"))
        typer.echo(f"{out['evaluation_id']}: {out['status']}"
                   + (" (identical to an earlier submission: its result, no quota used)"
                      if out.get("resubmission") else ""))
        if main is not None:
            typer.echo(f"main metric: {main:.4f}")
        typer.echo(f"receipt: {out.get('receipt')}")
        quota = out.get("quota") or {}
        typer.echo(f"quota: {quota.get('remaining')} of {quota.get('per_day')} left")
