"""`radcurate`: the command line for curators and operators."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer

from radcurate import progress
from radcurate.stack import local
from radcurate.stack.procs import StackError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="RadCurate: curate expert-verified radiology benchmarks.")
StateDir = Annotated[Path, typer.Option("--state-dir", help="Where the local stack keeps its state.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q",
                                     help="No progress output (plain lines when not a terminal or CI=true).")]
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
          layout: Annotated[str, typer.Option(help="lumbar only: ingest or competition")] = "ingest",
          lateral: Annotated[bool, typer.Option(help="cxr only: each study gets a lateral view too.")] = False,
          quiet: Quiet = False) -> None:
    """Write synthetic de-identified studies, reports and (separately) their hidden truth."""
    if protocol == "lumbar":
        from radcurate.synth.lumbar import synth_lumbar

        try:
            with progress.use(quiet):
                synth_lumbar(studies, seed, out, layout=layout)
        except ValueError as exc:
            fail(str(exc), 2)
        typer.echo(f"wrote {studies} lumbar MRI studies to {out} ({layout} layout)")
        return
    if protocol != "cxr":
        fail(f"unknown protocol {protocol!r}: cxr or lumbar", 2)
    from radcurate.synth.cxr import synth_cxr

    with progress.use(quiet):
        summary = synth_cxr(studies, seed, out, lateral=lateral)
    typer.echo(f"wrote {summary.n_studies} studies of {summary.n_patients} patients to {out}")


@app.command()
def ingest(data_dir: Annotated[Path | None, typer.Argument(
               exists=True, file_okay=False,
               help="A study folder (reports.csv + dicom/); not with --dicomweb.")] = None,
           scrub: Annotated[bool, typer.Option(help="Remove identifying data instead of rejecting the file.")] = False,
           allow_burned_in_annotation: Annotated[bool, typer.Option(
               help="Accept objects marked BurnedInAnnotation YES (you have checked their pixels).")] = False,
           concurrency: Annotated[int | None, typer.Option(
               help="Requests in flight: batches of studies for a folder (default 3), studies for --dicomweb"
                    " (default 8).")] = None, state_dir: StateDir = DEFAULT_STATE,
           protocol: Annotated[str, typer.Option(
               help="a registered protocol: cxr, lumbar, or a plug-in's name")] = "cxr",
           dicomweb: Annotated[str | None, typer.Option(
               "--dicomweb", help="A PACS's DICOMweb root (e.g. http://pacs:8042/dicom-web): search it with"
                                  " QIDO-RS and retrieve with WADO-RS instead of reading a folder.")] = None,
           study_uid: Annotated[list[str] | None, typer.Option(
               "--study-uid", help="With --dicomweb: only this StudyInstanceUID (repeatable).")] = None,
           query: Annotated[list[str] | None, typer.Option(
               "--query", help="With --dicomweb: a QIDO-RS matching key, KEY=VALUE (repeatable),"
                               " e.g. ModalitiesInStudy=CR or StudyDate=20240101-20241231.")] = None,
           reports: Annotated[Path | None, typer.Option(
               "--reports", exists=True, dir_okay=False,
               help="With --dicomweb: CSV of reports keyed by accession_number or study_instance_uid.")] = None,
           quiet: Quiet = False) -> None:
    """Ingest a folder of studies (reports.csv + dicom/), or a PACS's studies (--dicomweb), into the
    running stack. Running it again ingests only what is missing; exit 1 if any study is not in."""
    from services.common import protocols

    by_name = {p.short_name: p.name for p in map(protocols.get, protocols.names())}
    by_name.update({name: name for name in by_name.values()})
    if protocol not in by_name:
        fail(f"unknown protocol {protocol!r}: one of {', '.join(sorted(by_name))}", 2)
    if dicomweb is not None:
        if data_dir is not None or reports is None:
            fail("--dicomweb takes no folder and needs --reports reports.csv", 2)
        if allow_burned_in_annotation:
            fail("--allow-burned-in-annotation is for a folder ingest, not --dicomweb", 2)
        _ingest_dicomweb(dicomweb, reports, study_uid or [], query or [], scrub=scrub, state_dir=state_dir,
                         protocol=by_name[protocol], concurrency=concurrency or 8, quiet=quiet)
        return
    if data_dir is None:
        fail("give a study folder, or --dicomweb URL --reports reports.csv", 2)
    import httpx

    from radcurate.bulk_ingest import BATCH_REQUESTS
    from radcurate.client import GatewayError
    from radcurate.demo import ingest_folder

    try:  # through the gateway API: a study it refuses is listed below, anything else ends the run
        state = local.require_running(state_dir)
        with progress.use(quiet):
            summary = asyncio.run(ingest_folder(state, data_dir, scrub=scrub, concurrency=concurrency or BATCH_REQUESTS,
                                                protocol=by_name[protocol],
                                                allow_burned_in=allow_burned_in_annotation))
    except (StackError, ValueError, GatewayError, httpx.TransportError) as exc:
        fail(str(exc))
    typer.echo(f"ingested {summary.ingested}, already present {summary.duplicates}, rejected {len(summary.rejected)}")
    for study_id, reason in summary.rejected:
        typer.secho(f"  rejected {study_id}: {reason}", fg=typer.colors.YELLOW, err=True)
    if summary.rejected:
        raise typer.Exit(1)


def _ingest_dicomweb(url: str, reports: Path, study_uids: list[str], query: list[str], *, scrub: bool,
                     state_dir: Path, protocol, concurrency: int, quiet: bool) -> None:
    from radcurate.pacs_cmd import print_summary, run_pacs_ingest
    from radcurate.pacs_ingest import parse_query
    from radcurate.pacs_reports import read_report_book
    from services.common.dicomweb import DicomWebError
    from services.common.pacs_import import ImportRequest

    try:  # ReportsError is a ValueError: bad input is reported before anything is contacted
        request = ImportRequest(url, tuple(study_uids), parse_query(query), scrub=scrub, protocol=protocol,
                                    concurrency=concurrency)
        book = read_report_book(reports)
    except ValueError as exc:
        fail(str(exc), 2)
    try:
        state = local.require_running(state_dir)
        summary = run_pacs_ingest(state, request, book, quiet=quiet)
    except (StackError, DicomWebError) as exc:
        fail(str(exc))
    print_summary(summary, quiet=quiet)
    if not summary.complete:
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
                     readers: Annotated[int, typer.Option(min=1, help="Panel size, when it is first registered.")] = 17,
                     seed: int = 0, state_dir: StateDir = DEFAULT_STATE, quiet: Quiet = False) -> None:
    """Register a panel of simulated radiologists (once; kept in the state dir) and let them read
    every assignment open on their own worklists. In a panel that also seats humans (`radcurate
    sample --panel you,reader-01,reader-02`), only the simulated seats are read."""
    from radcurate.client import GatewayError
    from radcurate.demo import simulate

    try:
        state = local.require_running(state_dir)
        with progress.use(quiet):
            votes = asyncio.run(simulate(state, truth, readers, seed))
    except (StackError, GatewayError) as exc:
        fail(str(exc))
    typer.echo(f"simulated readers cast {votes} votes")


@app.command()
def demo(studies: Annotated[int, typer.Option(min=20)] = 13_735, seed: int = 0,
         out: Annotated[Path, typer.Option()] = Path("out"),
         keep_running: Annotated[bool, typer.Option(help="Leave the stack up afterwards.")] = False,
         state_dir: Annotated[Path, typer.Option("--state-dir")] = Path(".radcurate/demo"),
         protocol: Annotated[str, typer.Option(help="cxr or lumbar")] = "cxr", quiet: Quiet = False) -> None:
    """Run a protocol's whole funnel on a fresh local stack and print it (CXR at the paper's scale).
    With --keep-running it ends with a reviewer token for a panel with your seat and two simulated ones."""
    from radcurate.demo import run_demo
    from services.common.contracts import Protocol

    by_name = {"cxr": Protocol.CXR, "lumbar": Protocol.LUMBAR}
    if protocol not in by_name:
        fail(f"unknown protocol {protocol!r}: cxr or lumbar", 2)
    try:
        with progress.use(quiet):
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
    from services.common.protocols.lumbar.competition import import_competition

    try:
        summary = import_competition(root, out, prefix=prefix)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"imported {len(summary.imported)} studies into {out}; next: radcurate ingest {out} --protocol lumbar")
    for study_id, problem in summary.refused:
        typer.secho(f"  refused {study_id}: {problem}", fg=typer.colors.YELLOW, err=True)
    if summary.refused:
        raise typer.Exit(1)


from radcurate import api_cmd, dlq_cmd, export_cmd, manifests_cmd, plan_cmd, report_cmd, score_cmd  # noqa: E402 - commands defined in their own modules

app.command("score")(score_cmd.score)
app.command("report")(report_cmd.report)
app.command("export")(export_cmd.export)
app.add_typer(api_cmd.users_app, name="users")
app.command("sample")(api_cmd.sample)
app.command("release")(api_cmd.release)
app.command("adjudicate")(api_cmd.adjudicate)
app.command("evaluate")(api_cmd.evaluate)
app.add_typer(dlq_cmd.app, name="dlq")
app.add_typer(manifests_cmd.app, name="manifests")
app.command("plan")(plan_cmd.plan)

def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
