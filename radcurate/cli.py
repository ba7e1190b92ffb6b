"""`radcurate`: the command line for curators and operators."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from radcurate.stack import local
from radcurate.stack.procs import StackError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="RadCurate: curate expert-verified radiology benchmarks.")
StateDir = Annotated[Path, typer.Option("--state-dir", help="Where the local stack keeps its state.")]
DEFAULT_STATE = Path(".radcurate")


def fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command()
def up(state_dir: StateDir = DEFAULT_STATE,
       with_prometheus: Annotated[bool, typer.Option(
           "--with-prometheus", help="Also start Prometheus scraping every service, with the alert rules.")] = False,
       ) -> None:
    """Start (or repair) the local stack: broker, Postgres, S3 server and the five services."""
    try:
        state = local.up(state_dir, with_prometheus=with_prometheus)
    except StackError as exc:
        fail(str(exc))
    _print_health(state)
    typer.echo(f"gateway: {state['gateway_url']}   stack: {local.stack_file(state_dir.resolve())}")
    if state.get("prometheus"):
        typer.echo(f"prometheus: {state['prometheus']['url']}")


@app.command()
def down(state_dir: StateDir = DEFAULT_STATE,
         wipe: Annotated[bool, typer.Option(
             "--wipe", help="Also delete the stack's data (users, votes, releases, objects, broker log).")] = False,
         ) -> None:
    """Stop exactly the processes the stack started; its data stays for the next `up` unless --wipe."""
    try:
        stopped = local.down(state_dir, wipe=wipe)
    except StackError as exc:
        fail(str(exc))
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    if wipe:
        typer.echo(f"wiped: {state_dir}")


@app.command()
def status(state_dir: StateDir = DEFAULT_STATE) -> None:
    """Print each part's health; exit 1 unless everything is healthy."""
    state = local.load(state_dir.resolve())
    if not state:
        fail(f"no stack in {state_dir}")
    if not _print_health(state):
        raise typer.Exit(1)


def _print_health(state: dict) -> bool:
    report = local.health(state)
    for part, word in report.items():
        typer.echo(f"{part:<10} {word}")
    return all(w in ("up", "healthy", "external") for w in report.values()) and bool(state.get("services"))


@app.command()
def migrate(service: Annotated[str, typer.Argument(help="extractor, mapper, sampler, consensus or gateway")]) -> None:
    """Apply a service's schema migrations to RADCURATE_<SERVICE>_DATABASE_URL."""
    import services
    from services.common.db import apply_migrations, migration_files
    from services.common.settings import ServiceSettings

    if service not in local.SERVICES:
        fail(f"unknown service {service!r}; one of {', '.join(local.SERVICES)}", 2)
    settings_cls = type("S", (ServiceSettings,), {"model_config": {"env_prefix": f"RADCURATE_{service.upper()}_",
                                                                  "extra": "ignore"}})
    try:
        dsn = settings_cls().database_url.get_secret_value()
    except Exception:  # noqa: BLE001 - pydantic explains which variable is missing
        fail(f"set RADCURATE_{service.upper()}_DATABASE_URL", 2)
    applied = apply_migrations(dsn, migration_files(Path(services.__file__).parent / service))
    typer.echo(f"{service}: applied {len(applied)} migration(s){': ' + ', '.join(applied) if applied else ''}")


@app.command()
def synth(studies: Annotated[int, typer.Option(min=1)] = 500, seed: int = 0,
          out: Annotated[Path, typer.Option()] = Path("data/synth"),
          protocol: Annotated[str, typer.Option(help="cxr or lumbar")] = "cxr",
          layout: Annotated[str, typer.Option(help="lumbar only: ingest or competition")] = "ingest") -> None:
    """Write synthetic de-identified studies, reports and (separately) their hidden truth."""
    if protocol == "lumbar":
        from radcurate.synth.lumbar import synth_lumbar

        try:
            synth_lumbar(studies, seed, out, layout=layout)
        except ValueError as exc:
            fail(str(exc), 2)
        typer.echo(f"wrote {studies} lumbar MRI studies to {out} ({layout} layout)")
        return
    if protocol != "cxr":
        fail(f"unknown protocol {protocol!r}: cxr or lumbar", 2)
    from radcurate.synth.cxr import synth_cxr

    summary = synth_cxr(studies, seed, out)
    typer.echo(f"wrote {summary.n_studies} studies of {summary.n_patients} patients to {out}")


@app.command()
def ingest(data_dir: Annotated[Path, typer.Argument(exists=True, file_okay=False)],
           scrub: Annotated[bool, typer.Option(help="Remove identifying data instead of rejecting the file.")] = False,
           concurrency: int = 8, state_dir: StateDir = DEFAULT_STATE,
           protocol: Annotated[str, typer.Option(help="cxr or lumbar")] = "cxr") -> None:
    """Ingest a folder of studies (reports.csv + dicom/) into the running stack."""
    from radcurate.demo import ingest_folder
    from services.common.contracts import Protocol

    by_name = {"cxr": Protocol.CXR, "lumbar": Protocol.LUMBAR}
    if protocol not in by_name:
        fail(f"unknown protocol {protocol!r}: cxr or lumbar", 2)
    try:
        state = local.require_running(state_dir)
        summary = asyncio.run(ingest_folder(state, data_dir, scrub=scrub, concurrency=concurrency,
                                            protocol=by_name[protocol]))
    except (StackError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"ingested {summary.ingested}, already present {summary.duplicates}, rejected {len(summary.rejected)}")
    for study_id, reason in summary.rejected:
        typer.secho(f"  rejected {study_id}: {reason}", fg=typer.colors.YELLOW, err=True)
    if summary.rejected:
        raise typer.Exit(1)


@app.command()
def label(in_path: Annotated[Path, typer.Option("--in", exists=True, dir_okay=False)],
          out_path: Annotated[Path, typer.Option("--out")],
          backend: Annotated[str, typer.Option(help="rules or llm")] = "rules") -> None:
    """Label reports (JSON lines {"id", "report"}) with the extractor and mapper backends."""
    from radcurate.label_file import label_file

    try:
        summary = label_file(in_path, out_path, backend=backend)
    except (ValueError, NotImplementedError) as exc:
        fail(str(exc), 2)
    typer.echo(f"labelled {summary.labelled} report(s) into {out_path}")
    for err in summary.errors:
        typer.secho(f"  {err}", fg=typer.colors.YELLOW, err=True)
    if summary.errors:
        raise typer.Exit(1)


@app.command("simulate-readers")
def simulate_readers(truth: Annotated[Path, typer.Option(exists=True, dir_okay=False)],
                     readers: int = 17, seed: int = 0, state_dir: StateDir = DEFAULT_STATE) -> None:
    """Register a panel of simulated radiologists (if needed) and let them read every open assignment."""
    from radcurate.demo import simulate

    try:
        state = local.require_running(state_dir)
        votes = asyncio.run(simulate(state, truth, readers, seed))
    except StackError as exc:
        fail(str(exc))
    typer.echo(f"{readers} simulated readers cast {votes} votes")


@app.command()
def demo(studies: Annotated[int, typer.Option(min=20)] = 13_735, seed: int = 0,
         out: Annotated[Path, typer.Option()] = Path("out"),
         keep_running: Annotated[bool, typer.Option(help="Leave the stack up afterwards.")] = False,
         state_dir: Annotated[Path, typer.Option("--state-dir")] = Path(".radcurate/demo"),
         protocol: Annotated[str, typer.Option(help="cxr or lumbar")] = "cxr") -> None:
    """Run a protocol's whole funnel on a fresh local stack and print it (CXR at the paper's scale)."""
    from radcurate.demo import run_demo
    from services.common.contracts import Protocol

    by_name = {"cxr": Protocol.CXR, "lumbar": Protocol.LUMBAR}
    if protocol not in by_name:
        fail(f"unknown protocol {protocol!r}: cxr or lumbar", 2)
    try:
        run_demo(studies=studies, seed=seed, out=out, state_dir=state_dir, keep_running=keep_running,
                 protocol=by_name[protocol])
    except StackError as exc:
        fail(str(exc))



@app.command("import-lumbar")
def import_lumbar(root: Annotated[Path, typer.Argument(exists=True, file_okay=False,
                                                       help="A folder laid out like the RSNA 2024 competition data.")],
                  out: Annotated[Path, typer.Argument(help="Where to write the ingest layout.")],
                  prefix: Annotated[str, typer.Option(help="train or test: which CSVs to read")] = "train") -> None:
    """Turn a competition-layout lumbar dataset into `radcurate ingest --protocol lumbar` input
    (prior grades and points become the report and priors.jsonl)."""
    from radcurate.lumbar.competition import import_competition

    try:
        summary = import_competition(root, out, prefix=prefix)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"imported {len(summary.imported)} studies into {out}; next: radcurate ingest {out} --protocol lumbar")
    for study_id, problem in summary.refused:
        typer.secho(f"  refused {study_id}: {problem}", fg=typer.colors.YELLOW, err=True)
    if summary.refused:
        raise typer.Exit(1)


from radcurate import export_cmd, report_cmd, score_cmd  # noqa: E402 - commands defined in their own modules

app.command("score")(score_cmd.score)
app.command("report")(report_cmd.report)
app.command("export")(export_cmd.export)

def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
