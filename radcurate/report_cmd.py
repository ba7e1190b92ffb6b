"""`radcurate report`: the agreement and AI-vs-expert report of the running stack, as tables.

It asks the gateway (`GET /api/v1/reports/agreement`), which asks the consensus service: the
command line sees exactly what the curator API serves.
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


async def fetch_report(state: dict, protocol: str, timeout: float = 60) -> dict:
    """The report, waiting (polling) until consensus has computed it."""
    api = Gateway(state["gateway_url"], state["admin_token"])
    try:
        resp = await api.request("GET", "/api/v1/reports/agreement", params={"protocol": protocol, "wait": 15})
        body = resp.json()
        for _ in range(int(timeout / 0.5)):
            if body.get("status") == "ready":
                return body
            await asyncio.sleep(0.5)
            body = (await api.request("GET", body["href"])).json()
        raise StackError("the consensus service did not answer the report request in time")
    finally:
        await api.aclose()


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ci(interval: list[float] | None) -> str:
    return "n/a" if not interval else f"[{interval[0]:.2f}, {interval[1]:.2f}]"


def render(report: dict) -> list[str]:
    """The report as plain-text tables, one section per question it answers."""
    lines = [f"studies decided {report['studies']['decided']}, accepted {report['studies']['accepted']},"
             f" in kappa {report['studies']['in_kappa']}, votes {report['studies']['votes']}", "",
             f"{'label':<34} {'kappa':>7} {'95% CI (patients)':>17} {'alpha':>7} {'agree_all':>10} {'mostly':>8}"
             f" {'disagree':>9}"]
    shares = report["verdict_shares"]
    for label, kappa in report["fleiss_kappa"].items():
        s = shares["per_label"][label]
        ci = _ci(report.get("fleiss_kappa_ci95", {}).get(label))
        alpha = report.get("krippendorff_alpha", {}).get(label)
        lines.append(f"{label:<34} {_num(kappa):>7} {ci:>17} {_num(alpha):>7} {_num(s['agree_all']):>10}"
                     f" {_num(s['agree_mostly']):>8} {_num(s['disagree']):>9}")
    o = shares["overall"]
    lines += [f"{'overall':<34} {'':>7} {'':>17} {'':>7} {_num(o['agree_all']):>10} {_num(o['agree_mostly']):>8}"
              f" {_num(o['disagree']):>9}", "",
              f"{'reader':<20} {'reads':>6} {'agree w/ majority':>18} {'median s':>9}"]
    for reader, st in report["readers"].items():
        lines.append(f"{reader:<20} {st['reads']:>6} {_num(st['majority_agreement']):>18}"
                     f" {_num(st['median_seconds'], 1):>9}")
    ai = report["ai_vs_expert"]
    lines += _ai_table("AI vs expert, all studies (95% CIs resample patients)", ai["overall"])
    for group in ai["by_model"]:
        e, m = group["extraction"], group["mapping"]
        lines += _ai_table(f"AI vs expert, extraction {e['backend']}/{e['model']}/{e['prompt_version']},"
                           f" mapping {m['backend']}/{m['model']}/{m['prompt_version']}", group)
    for tier, group in ai["by_difficulty"].items():
        lines += _ai_table(f"AI vs expert, difficulty {tier}", group)
    return lines


def _ai_table(title: str, table: dict) -> list[str]:
    lines = ["", f"{title} ({table['studies']} studies)",
             f"{'label':<34} {'confirmed':>9} {'removed':>8} {'added':>6} {'precision':>9} {'recall':>7}"
             + (f" {'precision CI':>14} {'recall CI':>14}" if "ci95" in table else "")]
    for label, c in table["per_label"].items():
        ci = table.get("ci95", {}).get(label)
        lines.append(f"{label:<34} {c['confirmed']:>9} {c['removed']:>8} {c['added']:>6}"
                     f" {_num(c['precision']):>9} {_num(c['recall']):>7}"
                     + (f" {_ci(ci['precision']):>14} {_ci(ci['recall']):>14}" if ci else ""))
    return lines


def report(protocol: Annotated[str, typer.Option(help="Protocol id.")] = "cxr-label-verification",
           as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
           state_dir: Annotated[Path, typer.Option("--state-dir")] = Path(".radcurate"),
           truth: Annotated[Path | None, typer.Option(
               "--truth", exists=True, dir_okay=False,
               help="Simulation only: audit the latest release's labels against this truth.jsonl.")] = None,
           release_id: Annotated[str | None, typer.Option(help="With --truth: the release to audit.")] = None) -> None:
    """Print Fleiss' kappa per label (with patient-bootstrap CIs), Krippendorff's alpha, verdict
    shares, reader stats and AI-vs-expert tables; with --truth, the benchmark's label error."""
    if truth is not None:
        _truth_report(truth, protocol, release_id, state_dir, as_json)
        return
    try:
        body = asyncio.run(fetch_report(local.require_running(state_dir), protocol))
    except (StackError, GatewayError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(body, indent=2, sort_keys=True) if as_json else "\n".join(render(body)))


def _truth_report(truth_path: Path, protocol: str, release_id: str | None, state_dir: Path, as_json: bool) -> None:
    from radcurate import truth_audit, truth_report
    from services.common.taxonomy import load_taxonomy

    try:
        truth = truth_report.cxr_truth(truth_path)
        state = local.require_running(state_dir)
        release = truth_report.load_release(state["dsns"]["consensus"], protocol, release_id)
        result = truth_report.truth_audit(release, truth)
    except (StackError, LookupError, ValueError, KeyError, json.JSONDecodeError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    typer.echo(f"release {result['release_id']} against {truth_path} (simulation only)")
    typer.echo("\n".join(truth_audit.render(result, load_taxonomy("cxr").label_ids)))
