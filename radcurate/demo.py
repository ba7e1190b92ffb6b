"""`make demo`: the CXR funnel at the paper's scale, on a fresh local stack, end to end.

13,735 synthetic studies → ingest → extractor → mapper → sampler (1,000) → 17 simulated readers
through the HTTP API → consensus → selection (200) → 100 released / 100 holdout. Every figure
printed at the end is counted from what the services recorded.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from radcurate import progress
from radcurate.bulk_ingest import BATCH_REQUESTS, IngestSummary, ingest_dir, read_reports
from radcurate.client import Gateway
from radcurate.cpu_clock import StepClock
from radcurate.reading_session import save_panel
from radcurate.simulate import load_truth, register_panel, run_panel
from radcurate.stack import local
from radcurate.stack.procs import StackError
from services.common.contracts import Protocol
from services.common.objectstore import ObjectStore

PAPER = {"ingested": 13_735, "sampled": 1_000, "readers": 17, "accepted": 381, "selected": 200,
         "released": 100, "holdout": 100}


def store_for(state: dict) -> ObjectStore:
    from minio import Minio

    s3 = state["s3"]
    return ObjectStore(Minio(s3["endpoint"], access_key=s3["access_key"], secret_key=s3["secret_key"],
                             secure=False, region="us-east-1"))


async def ingest_folder(state: dict, data_dir: Path, *, scrub: bool = False, concurrency: int = BATCH_REQUESTS,
                        protocol: str = Protocol.CXR, allow_burned_in: bool = False) -> IngestSummary:
    """A study folder into the running stack, through the gateway API as its admin (curator rights)."""
    total = len(read_reports(data_dir))  # a folder that is not one fails before anything is sent
    api = Gateway(state["gateway_url"], state["admin_token"])
    try:
        with progress.current().task("ingest", total=total, unit="studies") as task:
            return await ingest_dir(data_dir, api, scrub=scrub, concurrency=concurrency, protocol=protocol,
                                    allow_burned_in=allow_burned_in,
                                    progress=lambda s: task.update(s.ingested + s.duplicates + len(s.rejected)))
    finally:
        await api.aclose()


async def simulate(state: dict, truth_path: Path, n_readers: int, seed: int) -> int:
    """Register the panel once (tokens kept in the state dir), then read every open assignment.
    Only the simulated readers' own worklists are read: a human seat in the same panel (see
    `reading_session`) keeps its assignments for the human."""
    from radcurate.reading_session import load_panel, save_panel

    api = Gateway(state["gateway_url"], state["admin_token"])
    try:
        readers = load_panel(state["state_dir"])
        if readers is None:
            readers = await register_panel(api, n_readers, seed)
            save_panel(state["state_dir"], readers)
        return await run_panel(api, readers, load_truth(truth_path))
    finally:
        await api.aclose()


async def wait_for(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 600,
                   interval: float = 0.5) -> None:
    """Poll `check` every `interval` seconds until it holds (StackError after `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(interval)
    raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")


def scaled_plan(studies: int) -> tuple[int, int]:
    """The paper's proportions (1,000 of 13,735 sampled; 200 selected), kept for smaller runs."""
    n = min(1000, studies, max(60, round(studies * PAPER["sampled"] / PAPER["ingested"])))
    return n, min(200, max(10, n // 5))


def synth_data(studies: int, seed: int, data_dir: Path) -> None:
    marker = data_dir / "synth.json"
    wanted = {"studies": studies, "seed": seed}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return
    from radcurate.synth.cxr import synth_cxr

    shutil.rmtree(data_dir, ignore_errors=True)
    synth_cxr(studies, seed, data_dir)
    marker.write_text(json.dumps(wanted))


def download_release(state: dict, release: dict, out: Path) -> Path:
    """Copy the public part of a release to `out/<release_id>/`, verifying every checksum (what
    `radcurate export` does: the files fetched several at a time)."""
    from radcurate.export_cmd import ChecksumError, export_release

    target = out / release["release_id"]
    try:
        export_release(store_for(state), state["buckets"]["public"], release, target)
    except ChecksumError as exc:
        raise StackError(f"checksum mismatch: {exc}") from exc
    return target


def run_demo(*, studies: int, seed: int, out: Path, state_dir: Path, keep_running: bool,
             protocol: Protocol = Protocol.CXR) -> dict:
    """The protocol's funnel on a fresh local stack: CXR at the paper's scale, or lumbar grading."""
    from radcurate import demo_lumbar

    lumbar = protocol == Protocol.LUMBAR
    timings: dict[str, float] = {}
    local.down(state_dir)
    shutil.rmtree(state_dir, ignore_errors=True)
    t0 = time.perf_counter()
    data_dir = Path("data") / (f"demo-lumbar-{studies}-{seed}" if lumbar else f"demo-{studies}-{seed}")
    (demo_lumbar.synth_lumbar_data if lumbar else synth_data)(studies, seed, data_dir)
    timings["synth"] = time.perf_counter() - t0
    t = time.perf_counter()
    progress.current().note("starting the local stack (broker, Postgres, S3 server, five services)…")
    state = local.up(state_dir)
    timings["stack up"] = time.perf_counter() - t
    progress.current().note(f"stack up in {timings['stack up']:.1f}s: {state['gateway_url']}")
    funnel = demo_lumbar.lumbar_funnel if lumbar else _funnel
    session = None
    try:
        figures = asyncio.run(funnel(state, data_dir, studies, seed, out, timings))
        if keep_running:
            session = asyncio.run(_reading_session(state, data_dir, protocol, seed))
    finally:
        if not keep_running:
            local.down(state_dir)
    timings["total"] = time.perf_counter() - t0
    (demo_lumbar.print_lumbar_funnel if lumbar else print_funnel)(figures, timings)
    if keep_running:
        lines = session.instructions(state_dir, data_dir / "truth.jsonl") if session else [
            "", (f"every study was sampled, so none is left for a human reader: run a larger --studies;"
                 f" stop with radcurate down --state-dir {state_dir}")]
        print("\n".join(lines))
    return figures


async def _reading_session(state: dict, data_dir: Path, protocol: Protocol, seed: int):
    """A panel of the human newcomer and two of the demo's simulated readers, on studies the
    funnel did not sample; the simulated seats read at once."""
    from radcurate.reading_session import load_panel, open_reading_session

    api = Gateway(state["gateway_url"], state["admin_token"])
    try:
        simulated = (load_panel(state["state_dir"]) or [])[:2]
        return await open_reading_session(api, simulated, load_truth(data_dir / "truth.jsonl"),
                                          protocol=protocol, seed=seed + 1)
    finally:
        await api.aclose()


async def _funnel(state: dict, data_dir: Path, studies: int, seed: int, out: Path, timings: dict) -> dict:
    n, target = scaled_plan(studies)
    return await run_funnel(state, data_dir, protocol=Protocol.CXR, n=n, target=target, readers=PAPER["readers"],
                            reader_prefix="reader", release_id=f"cxr-demo-{studies}-s{seed}", seed=seed, out=out,
                            timings=timings)


async def run_funnel(state: dict, data_dir: Path, *, protocol: Protocol, n: int, target: int, readers: int,
                     reader_prefix: str, release_id: str, seed: int, out: Path, timings: dict) -> dict:
    """Ingest → label → sample → read → decide → release for one protocol, timing each step (wall
    and every process's CPU); returns the services' own counts and where the public release was written."""
    clock = StepClock(state, timings)
    t = time.perf_counter()
    summary = await ingest_folder(state, data_dir, protocol=protocol)
    clock.lap("ingest", time.perf_counter() - t)
    if summary.rejected:
        raise StackError(f"{len(summary.rejected)} studies rejected at ingest, e.g. {summary.rejected[0]}")
    api = Gateway(state["gateway_url"], state["admin_token"])
    try:
        figures = await _review_and_release(api, state, data_dir, summary.ingested, protocol=protocol, n=n,
                                            target=target, n_readers=readers, reader_prefix=reader_prefix,
                                            release_id=release_id, seed=seed, out=out, clock=clock)
        return {**figures, "cpu": clock.lines()}
    finally:
        await api.aclose()


async def _review_and_release(api: Gateway, state: dict, data_dir: Path, ingested: int, *, protocol: Protocol,
                              n: int, target: int, n_readers: int, reader_prefix: str, release_id: str,
                              seed: int, out: Path, clock: StepClock) -> dict:
    t = time.perf_counter()
    await wait_for_funnel(api, protocol, "suggested", ingested, "extract + map", "studies")
    clock.lap("extract + map", time.perf_counter() - t)
    t = time.perf_counter()
    readers = await register_panel(api, n_readers, seed, prefix=reader_prefix)
    save_panel(state["state_dir"], readers)
    await api.request_sampling({"n": n, "readers_per_study": 3, "seed": seed}, protocol=protocol.value)
    await wait_for_funnel(api, protocol, "assignments", 3 * n, "sample + assign", "reads")
    clock.lap("sample + assign", time.perf_counter() - t)
    t = time.perf_counter()
    votes = await run_panel(api, readers, load_truth(data_dir / "truth.jsonl"))
    # consensus is only catching up with the last votes now: polled often, as the release below
    await wait_for_funnel(api, protocol, "decided", n, "consensus", "studies", interval=0.1)
    clock.lap("review + consensus", time.perf_counter() - t)
    t = time.perf_counter()
    await api.request_release({"target_size": target, "seed": seed}, release_id, protocol=protocol.value)
    with progress.current().task("select + release", unit="releases") as task:
        # a release's status is one cheap row: polled often, so the export does not wait out the interval
        await wait_for("the release", lambda: _released(api, release_id), interval=0.1)
        task.advance()
    release = await api.release(release_id)
    target_dir = download_release(state, release, out)
    clock.lap("select + release", time.perf_counter() - t)
    funnel = (await api.progress(protocol.value))["funnel"]
    return {**funnel, "votes": votes, "readers": len(readers), "released": release["released_count"],
            "holdout": release["holdout_count"], "selected": release["released_count"] + release["holdout_count"],
            "out": str(target_dir)}


async def _funnel_at_least(api: Gateway, key: str, value: int, protocol: Protocol = Protocol.CXR,
                           task: progress.Task | None = None) -> bool:
    count = (await api.progress(protocol.value))["funnel"][key]
    if task is not None:
        task.update(count)
    return count >= value


async def wait_for_funnel(api: Gateway, protocol: Protocol, key: str, value: int, step: str, unit: str,
                          interval: float = 0.5) -> None:
    """Wait until the funnel's `key` count reaches `value`, showing it as the step's progress."""
    with progress.current().task(step, total=value, unit=unit) as task:
        await wait_for(f"{key} to reach {value}", lambda: _funnel_at_least(api, key, value, protocol, task),
                       interval=interval)


async def _released(api: Gateway, release_id: str) -> bool:
    # Answered by the gateway the moment the release commits (or unreleased after 10 s).
    return (await api.release(release_id, wait=10))["status"] == "released"


def print_funnel(f: dict, timings: dict) -> None:
    rows = [
        ("studies ingested (synthetic, de-identified)", PAPER["ingested"], f["ingested"]),
        ("studies with AI-suggested labels", PAPER["ingested"], f["suggested"]),
        ("studies sampled for expert review", PAPER["sampled"], f["sampled"]),
        ("readers in the panel", PAPER["readers"], f["readers"]),
        ("votes cast (3 readers per study)", 3 * PAPER["sampled"], f["votes"]),
        ("studies with >= 2 'Agree all' (accepted)", PAPER["accepted"], f["accepted"]),
        ("benchmark size", PAPER["selected"], f["selected"]),
        ("released", PAPER["released"], f["released"]),
        ("holdout", PAPER["holdout"], f["holdout"]),
    ]
    print()
    print(f"{'step':<46} {'paper':>8} {'this run':>9}")
    print("-" * 65)
    for name, paper, ours in rows:
        print(f"{name:<46} {paper:>8,} {ours:>9,}")
    print()
    print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    print_step_cpu(f)
    print(f"release written to {f['out']}")


def print_step_cpu(f: dict) -> None:
    """Each step's wall time next to the CPU every process of the stack spent in it (from /proc)."""
    if f.get("cpu"):
        print("per step (CPU seconds of each process, the demo's own as 'client'):")
        print("\n".join(f["cpu"]))
