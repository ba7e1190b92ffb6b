"""The terminal side of `radcurate ingest --dicomweb`: progress while it runs, one line per study
after, and an exit status that says whether everything found is now in RadCurate."""

from __future__ import annotations

import asyncio
import sys

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from radcurate.client import Gateway
from radcurate.pacs_ingest import ingest_from_pacs
from services.common.pacs_import import ImportRequest, ImportSummary, Outcome
from services.common.pacs_pairing import ReportBook

COLOURS = {Outcome.INGESTED: typer.colors.GREEN, Outcome.PRESENT: None,
           Outcome.REFUSED: typer.colors.YELLOW, Outcome.FAILED: typer.colors.RED}


def run_pacs_ingest(state: dict, request: ImportRequest, book: ReportBook, *, quiet: bool) -> ImportSummary:
    """Run the ingest against the running stack's gateway, with a progress bar on a terminal.
    Raises DicomWebError when the search itself fails."""
    console = Console(stderr=True)
    show = not quiet and sys.stderr.isatty()

    async def go() -> ImportSummary:
        gateway = Gateway(state["gateway_url"], state["admin_token"])
        try:
            with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.fields[tally]}"), TimeElapsedColumn(),
                          console=console, disable=not show, transient=True) as progress:
                task = progress.add_task("searching the PACS", total=None, tally="")
                tally = {o: 0 for o in Outcome}

                def found(n: int) -> None:
                    progress.update(task, description="ingesting", total=n)

                def done(result) -> None:
                    tally[result.outcome] += 1
                    progress.update(task, advance=1, tally=" ".join(f"{o}: {n}" for o, n in tally.items() if n))

                return await ingest_from_pacs(request, book, gateway, on_found=found, on_result=done)
        finally:
            await gateway.aclose()

    return asyncio.run(go())


def print_summary(summary: ImportSummary, *, quiet: bool) -> None:
    """One line per study that needs a look (every study unless quiet), then the totals."""
    for r in summary.results:
        if quiet and r.outcome in (Outcome.INGESTED, Outcome.PRESENT):
            continue
        name = r.study_id or f"StudyInstanceUID {r.study_instance_uid}"
        line = f"  {r.outcome:<8} {name}" + (f": {r.detail}" if r.detail else "")
        bad = r.outcome in (Outcome.REFUSED, Outcome.FAILED)
        typer.secho(line, fg=COLOURS[r.outcome], err=bad)
    counts = {o: summary.count(o) for o in Outcome}
    tail = "" if counts[Outcome.INGESTED] else " (nothing new to ingest)"
    typer.echo(f"{summary.found} studies found: ingested {counts[Outcome.INGESTED]}, already present"
               f" {counts[Outcome.PRESENT]}, refused {counts[Outcome.REFUSED]}, failed {counts[Outcome.FAILED]}{tail}")
