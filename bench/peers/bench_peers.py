"""`make bench-peers`: RadCurate side by side with Label Studio, the tool a team would pick instead,
on the same machine in the same run (issue 15 §5). Goal: RadCurate >= 5x on every row.

Both sides get the same synthetic CXR archive (`radcurate synth`'s generator: reports, and the
labels RadCurate's rules extractor + lexicon mapper suggest for them). Rows:

- import: RadCurate ingests the studies (DICOM + report into Postgres and S3) and its services
  extract and map labels until every study has its suggestions; Label Studio imports the same
  reports as tasks with the suggested labels as predictions (computed beforehand, outside its time).
- annotate: `--votes` answers from 50 concurrent httpx clients, each one read + one write: RadCurate
  `GET /reviews/next` + the vote (50 reviewers, 3 per study); Label Studio `GET /api/tasks/{id}` +
  `POST /api/tasks/{id}/annotations` (one annotation per task, one user's token).
- export: RadCurate from the last vote until the release is downloaded and verified (consensus
  catching up, selection, release build, download); Label Studio's JSON export of the annotated tasks.

The two run one after the other (RadCurate's stack is stopped before Label Studio starts), and the
load average of the shared machine is printed next to every figure. Each row is also given in CPU
seconds (every process of each side, read from /proc, with and without the bench's own client), a
ratio the load does not move as it moves the wall. `--ls-db postgres` runs Label Studio on
PostgreSQL (the stack's embedded server, its CPU counted on Label Studio's side) instead of its
default sqlite, which serialises the 50 annotators' writes.
Run: PYTHONPATH=$PWD .venv/bin/python bench/peers/bench_peers.py [--tasks N] [--votes N]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import psycopg
from psycopg import sql as psql

sys.path.insert(0, str(Path(__file__).parent))

from label_studio import LabelStudio, Task  # noqa: E402

from radcurate.campaign import synth_pool  # noqa: E402
from radcurate.client import Gateway  # noqa: E402
from radcurate.cpu_clock import CLIENT, describe, process_cpu, spent, stack_cpu  # noqa: E402
from radcurate.demo import download_release, ingest_folder, scaled_plan, synth_data, wait_for  # noqa: E402
from radcurate.stack import local, procs  # noqa: E402
from services.common.contracts import Protocol  # noqa: E402
from services.common.taxonomy import load_taxonomy  # noqa: E402

GOAL = 5.0
ROWS = ("import", "annotate", "export")
WAIT_S = 3600  # the shared machine can be very busy: a step is slow, not failed, within an hour


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


class Clock:
    """Times named steps: wall seconds, the load average at the step's end and the CPU seconds each
    process of the side spent in it (from /proc: on the shared machine the wall follows the load,
    a process's CPU clock does not). `sample` reads the side's CPU per process, this one included."""

    def __init__(self, sample: Callable[[], dict[str, float]]) -> None:
        self.sample = sample
        self.seconds: dict[str, float] = {}
        self.load: dict[str, str] = {}
        self.cpu: dict[str, dict[str, float]] = {}
        self._cpu_at: dict[str, float] = {}

    def start(self) -> float:
        """The step starts now: its CPU is counted from here; returns the wall clock for `record`."""
        self._cpu_at = self.sample()
        return time.perf_counter()

    def record(self, step: str, started: float) -> None:
        self.seconds[step] = time.perf_counter() - started
        self.cpu[step] = spent(self._cpu_at, self.sample())
        self.load[step] = load()
        print(f"  {step}: {self.seconds[step]:.1f}s (load {self.load[step]}), {describe(self.cpu[step])}",
              flush=True)

    def cpu_total(self, step: str) -> float:
        return sum(self.cpu[step].values())


def archive(tasks: int, seed: int, data_dir: Path) -> list[Task]:
    """The synthetic archive RadCurate ingests, as Label Studio tasks with the labels RadCurate suggests."""
    synth_data(tasks, seed, data_dir)
    with open(data_dir / "reports.csv", newline="") as f:
        reports = {row["study_id"]: row["report"] for row in csv.DictReader(f)}
    pool = synth_pool(tasks, seed, Path(".radcurate/plan-cache"))
    out = [Task(s.study_id, reports[s.study_id], tuple(x.label_id for x in s.suggested)) for s in pool]
    if len(out) != len(reports):
        raise RuntimeError(f"{len(reports)} reports but {len(out)} labelled studies")
    return out


# --- RadCurate ---------------------------------------------------------------------------------

async def _funnel_count(api: Gateway, key: str) -> int:
    return int((await api.progress(Protocol.CXR.value))["funnel"][key])


async def _retrying(send: Callable[[], Awaitable[httpx.Response]], attempts: int = 5) -> httpx.Response:
    """A request sent again after a dropped keep-alive connection (as bench_gateway_load does)."""
    for attempt in range(attempts):
        try:
            return await send()
        except httpx.TransportError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


async def _reviewer(http: httpx.AsyncClient, token: str, latencies: list[float]) -> int:
    auth = {"Authorization": f"Bearer {token}"}
    votes = 0
    while True:
        t0 = time.perf_counter()
        resp = await _retrying(lambda: http.get("/api/v1/reviews/next", headers=auth))
        if resp.status_code == 204:
            return votes
        resp.raise_for_status()
        a = resp.json()
        # the Idempotency-Key makes sending the vote again after a dropped connection safe
        vote = await _retrying(lambda a=a: http.post(
            f"/api/v1/reviews/{a['assignment_id']}/vote", headers={**auth, "Idempotency-Key": a["assignment_id"]},
            json={"verdict": "agree_all", "confirm": True, "seconds_spent": 20}))
        if vote.status_code not in (200, 201):
            raise RuntimeError(f"vote on {a['assignment_id']}: {vote.status_code} {vote.text[:300]}")
        latencies.append(time.perf_counter() - t0)
        votes += 1


async def _radcurate(state: dict, data_dir: Path, studies: int, votes: int, clients: int, seed: int,
                     out: Path, clock: Clock) -> dict:
    started = clock.start()
    summary = await ingest_folder(state, data_dir)
    if summary.ingested != studies:
        raise RuntimeError(f"ingested {summary.ingested} of {studies} ({len(summary.rejected)} rejected)")
    api = Gateway(state["gateway_url"], state["admin_token"])
    try:
        async def all_suggested() -> bool:
            return await _funnel_count(api, "suggested") >= studies
        await wait_for("labels suggested", all_suggested, timeout=WAIT_S)
        clock.record("import", started)

        # not timed (no Label Studio counterpart): the reviewers' accounts and the sampled worklists
        n = votes // 3
        tokens = [await api.create_user(f"peer-{i:02d}", "reviewer") for i in range(clients)]
        await api.request_sampling({"n": n, "readers_per_study": 3, "seed": seed},
                                   panel=[f"peer-{i:02d}" for i in range(clients)], protocol=Protocol.CXR.value)

        async def all_assigned() -> bool:
            return await _funnel_count(api, "assignments") >= 3 * n
        await wait_for("assignments", all_assigned, timeout=WAIT_S)

        latencies: list[float] = []
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        started = clock.start()
        async with httpx.AsyncClient(base_url=state["gateway_url"], limits=limits, timeout=120) as http:
            cast = sum(await asyncio.gather(*(_reviewer(http, t, latencies) for t in tokens)))
        clock.record("annotate", started)
        if cast != 3 * n:
            raise RuntimeError(f"{cast} votes cast, {3 * n} expected")

        started = clock.start()

        async def all_decided() -> bool:
            return await _funnel_count(api, "decided") >= n
        await wait_for("consensus", all_decided, timeout=WAIT_S, interval=0.1)  # catching up: seconds at most
        release_id = f"peers-{studies}-s{seed}"
        await api.request_release({"target_size": scaled_plan(studies)[1], "seed": seed}, release_id,
                                  protocol=Protocol.CXR.value)

        async def released() -> bool:
            return (await api.release(release_id))["status"] == "released"
        await wait_for("the release", released, timeout=WAIT_S, interval=0.1)
        release = await api.release(release_id)
        download_release(state, release, out)
        clock.record("export", started)
        return {"votes": cast, "latencies": latencies, "released": release["released_count"]}
    finally:
        await api.aclose()


def run_radcurate(tasks: int, votes: int, clients: int, seed: int, data_dir: Path, work: Path) -> Clock:
    print(f"RadCurate: {tasks} studies, {votes} votes from {clients} clients", flush=True)
    state_dir = work / "radcurate-stack"
    t = time.perf_counter()
    state = local.up(state_dir)
    clock = Clock(lambda: stack_cpu(state))  # every process of the stack and this one (the client)
    print(f"  stack up in {time.perf_counter() - t:.1f}s (not timed)", flush=True)
    try:
        result = asyncio.run(_radcurate(state, data_dir, tasks, votes, clients, seed, work / "release", clock))
    finally:
        local.down(state_dir)
    print(f"  {result['votes']} votes, read+vote p50 {_pct(result['latencies'], 50):.0f} ms "
          f"p99 {_pct(result['latencies'], 99):.0f} ms; {result['released']} studies released", flush=True)
    return clock


# --- Label Studio ------------------------------------------------------------------------------

def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and every live descendant (each figure already holds its reaped children)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += process_cpu(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(c) for c in task.read_text().split()]
            except OSError:
                pass
    return total


def _postgres_for_label_studio(work: Path) -> tuple[dict, dict[str, str]]:
    """A fresh Postgres (the stack's embedded server and settings) with a database for Label Studio:
    the process entry to stop it and Label Studio's POSTGRE_* settings."""
    from radcurate.stack import postgres

    pg = postgres.start(work / "label-studio-pg" / "data", work / "label-studio-pg" / "postgres.log")
    password = secrets.token_hex(16)
    with psycopg.connect(pg["admin_dsn"], autocommit=True) as conn:
        conn.execute(psql.SQL("CREATE ROLE labelstudio LOGIN PASSWORD {}").format(psql.Literal(password)))
        conn.execute("CREATE DATABASE labelstudio OWNER labelstudio")
    return pg, {"POSTGRE_HOST": "127.0.0.1", "POSTGRE_PORT": str(pg["port"]), "POSTGRE_NAME": "labelstudio",
                "POSTGRE_USER": "labelstudio", "POSTGRE_PASSWORD": password}


def run_label_studio(executable: Path, archive_tasks: list[Task], votes: int, clients: int, data: Path,
                     work: Path, db: str = "sqlite") -> Clock:
    print(f"Label Studio: {len(archive_tasks)} tasks, {votes} annotations from {clients} clients, on {db}",
          flush=True)
    pg, settings = _postgres_for_label_studio(work) if db == "postgres" else (None, None)
    ls = LabelStudio(executable, data, settings)
    try:
        print(f"  started (migrations on an empty {db}) in {ls.start():.1f}s (not timed)", flush=True)
    except BaseException:
        procs.stop(pg)
        raise

    def cpu() -> dict[str, float]:  # its server, the database server it uses (if not in-process), this client
        return {"label-studio": tree_cpu(ls.pid), **({"postgres": tree_cpu(pg["pid"])} if pg else {}),
                CLIENT: process_cpu(os.getpid())}
    clock = Clock(cpu)
    try:
        project = ls.create_project(load_taxonomy("cxr").label_ids)
        started = clock.start()
        ids = ls.import_tasks(project, archive_tasks)
        clock.record("import", started)
        started = clock.start()
        done, latencies, failed = asyncio.run(ls.annotate(list(zip(ids, archive_tasks, strict=True))[:votes], clients))
        clock.record("annotate", started)
        if done != votes:
            raise RuntimeError(f"{done} annotations submitted, {votes} expected")
        started = clock.start()
        exported = ls.export(project, work / "label-studio-export.json")
        clock.record("export", started)
        if exported < votes:
            raise RuntimeError(f"the export holds {exported} annotations, {votes} expected")
    finally:
        ls.stop()
        procs.stop(pg)
    print(f"  {done} annotations, read+submit p50 {_pct(latencies, 50):.0f} ms p99 {_pct(latencies, 99):.0f} ms; "
          f"{failed} submissions failed (500 or no answer in 300 s; sent again unless the task then showed an "
          f"annotation); "
          f"the export holds {exported} annotations for {votes} submitted{_duplicates(exported, votes, failed)}",
          flush=True)
    return clock


def _duplicates(exported: int, votes: int, failed: int) -> str:
    """Where an export's extra annotations come from: with no submission failed, they are Label
    Studio's own retries of writes sqlite refused as locked (each answered 201 once)."""
    if exported <= votes:
        return ""
    return (" (duplicates: Label Studio's own retries of locked sqlite writes, or submissions sent again)"
            if failed else " (duplicates: Label Studio's own retries of locked sqlite writes; no submission failed)")


def _pct(xs: list[float], p: int) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000 if ordered else float("nan")


def print_table(rc: Clock, ls: Clock, tasks: int, votes: int) -> None:
    what = {"import": f"import {tasks:,} studies (+ labels)", "annotate": f"annotate {votes:,}",
            "export": "export"}
    print()
    print(f"{'row':<34} {'RadCurate':>10} {'load':>14} {'Label Studio':>13} {'load':>14} {'LS / RC':>8}  goal")
    print("-" * 108)
    for row in ROWS:
        ratio = ls.seconds[row] / rc.seconds[row]
        print(f"{what[row]:<34} {rc.seconds[row]:>9.1f}s {rc.load[row]:>14} {ls.seconds[row]:>12.1f}s "
              f"{ls.load[row]:>14} {ratio:>7.2f}x  >= {GOAL:.0f}x {'met' if ratio >= GOAL else 'NOT met'}")
    print(f"(load = 1/5/15-min load average of the shared {os.cpu_count()}-core machine at the step's end)")
    # CPU seconds do not follow the load as the wall does: the same rows as CPU, every process of each
    # side (RadCurate's stack, Label Studio's server) with and without this process, the client
    print()
    print(f"{'row, CPU seconds':<34} {'RadCurate':>10} {'no client':>10} {'Label Studio':>13} {'no client':>10} "
          f"{'LS / RC':>8} {'no client':>10}")
    print("-" * 102)
    for row in ROWS:
        rc_all, ls_all = rc.cpu_total(row), ls.cpu_total(row)
        rc_srv, ls_srv = rc_all - rc.cpu[row].get(CLIENT, 0.0), ls_all - ls.cpu[row].get(CLIENT, 0.0)
        print(f"{what[row]:<34} {rc_all:>9.1f}s {rc_srv:>9.1f}s {ls_all:>12.1f}s {ls_srv:>9.1f}s "
              f"{_ratio(ls_all, rc_all):>8} {_ratio(ls_srv, rc_srv):>10}")


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=13_735, help="studies / tasks imported (paper: 13,735)")
    parser.add_argument("--votes", type=int, default=3_000, help="annotations submitted (a multiple of 3)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent annotating clients")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--label-studio", type=Path, default=Path(".bench-peers/venv/bin/label-studio"),
                        help="the label-studio executable of the throwaway venv")
    parser.add_argument("--ls-data", type=Path, default=Path(".bench-peers/label-studio-data"),
                        help="Label Studio's data dir (wiped at start)")
    parser.add_argument("--only", choices=("radcurate", "label-studio"), help="run one side only (tries)")
    parser.add_argument("--ls-db", choices=("sqlite", "postgres"), default="sqlite",
                        help="Label Studio's database: its default sqlite (as `label-studio start` runs), or "
                             "PostgreSQL (its docs' advice past a trial; the stack's embedded server, counted "
                             "in its CPU)")
    args = parser.parse_args()
    votes = args.votes - args.votes % 3
    if not 3 <= votes <= 3 * args.tasks or votes > args.tasks:
        parser.error("--votes must be 3..tasks (one Label Studio task per annotation, 3 votes per sampled study)")
    if args.only != "radcurate" and not args.label_studio.exists():
        parser.error(f"{args.label_studio} not found: run `make bench-peers` (it installs Label Studio)")
    print(f"load average at start: {load()}", flush=True)
    data_dir = Path("data") / f"demo-{args.tasks}-{args.seed}"
    t = time.perf_counter()
    tasks = archive(args.tasks, args.seed, data_dir)
    print(f"archive: {len(tasks)} synthetic studies with suggested labels in {time.perf_counter() - t:.1f}s "
          f"(not timed)", flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    try:
        rc = run_radcurate(args.tasks, votes, args.clients, args.seed, data_dir, work) \
            if args.only != "label-studio" else None
        ls = run_label_studio(args.label_studio, tasks, votes, args.clients, args.ls_data, work,
                              args.ls_db) \
            if args.only != "radcurate" else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if rc and ls:
        print_table(rc, ls, args.tasks, votes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
