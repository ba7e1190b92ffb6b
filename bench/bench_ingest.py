"""Ingest alone: synthetic CXR studies through the gateway's batch ingest API into Postgres and S3.

The local stack with the gateway as its only service (its outbox relay included, so the
report-ingested events reach the broker), and the demo's own client (`ingest_folder`). Prints the
rate and the CPU each process spent per study (from /proc: the client, the gateway, the S3 server,
Postgres with its backends, the broker), with the load average: on a shared machine the rate
measures the machine, CPU per study measures the code.

Target (from the foundation issue): the full demo in < 5 minutes on 2 cores, which leaves the
ingest of 13,735 studies about 90 s, i.e. >= 150 studies/s.
Run: PYTHONPATH=$PWD .venv/bin/python bench/bench_ingest.py [studies]  (default 2,000: the first
studies of the paper-scale pool when it is synthesised, see bench_floor.pool_of)
The gateway's CPU is also split by thread, user and system (/proc): the event loop (HTTP, the
form, Postgres, the outbox relay) and the worker threads (validation and the S3 PUTs).
BENCH_PYSPY=/path/to/py-spy records the gateway over the ingest, each thread apart (BENCH_PYSPY_OUT,
default gateway-ingest.txt; BENCH_PYSPY_FORMAT, default raw: collapsed stacks to count by
function). py-spy counts a thread blocked in a socket's recv or sendall, or waiting for the GIL, as
busy: read the stacks with the thread CPU split beside them, or pass BENCH_PYSPY_ARGS="--gil" (extra
py-spy arguments, split on blanks) to keep only the samples that hold the GIL, i.e. the Python CPU.
BENCH_PG_STATEMENTS=1 preloads pg_stat_statements and prints, per batch request, each statement
Postgres ran over the ingest: calls, rows and shared buffers touched (the work; its times include
waiting on a loaded machine).
BENCH_S3_REQUESTS=1 starts SeaweedFS with its metrics port and prints the S3 requests per study by
bucket and action (bench_floor's count: the bucket "tansu" is the broker's log, "objects" ingest's
own PUTs).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_floor import load, pool_of, print_s3_requests, s3_requests, stack_cpu  # this folder (run as a script)

from radcurate.bulk_ingest import BATCH_STUDIES
from radcurate.demo import ingest_folder
from radcurate.stack import local, postgres, seaweed
from radcurate.stack.procs import free_port

TARGET_PER_SECOND = 150.0
_TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of a process, summed by kind: the event loop (the main thread)
    and the worker threads (asyncio.to_thread's pool and any other), from /proc."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        kind = "event loop" if task.name == str(pid) else "worker threads"
        for mode, seconds in zip(("user", "system"), _task_cpu(pid, task.name), strict=True):
            out[f"{kind} ({mode})"] = out.get(f"{kind} ({mode})", 0.0) + seconds
    return out


def _task_cpu(pid: int, tid: str) -> tuple[float, float]:
    """A thread's user and system CPU seconds (0 when it has ended meanwhile)."""
    try:
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def _pyspy(gateway_pid: int) -> subprocess.Popen | None:
    """py-spy recording the gateway (and its children) until interrupted, if BENCH_PYSPY names it."""
    exe = os.environ.get("BENCH_PYSPY")
    if not exe:
        return None
    out = Path(os.environ.get("BENCH_PYSPY_OUT", "gateway-ingest.txt")).resolve()
    print(f"py-spy recording the gateway into {out}")
    return subprocess.Popen([exe, "record", "-p", str(gateway_pid), "-r", "100", "-s", "--threads", "-o", str(out),
                             "-f", os.environ.get("BENCH_PYSPY_FORMAT", "raw"),
                             *os.environ.get("BENCH_PYSPY_ARGS", "").split()],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


_STATEMENTS = """
SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 110) AS query, calls, rows, total_exec_time AS ms,
       shared_blks_hit + shared_blks_read AS blocks
  FROM pg_stat_statements WHERE calls > 0 AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def _statements(state: dict) -> list[dict] | None:
    """pg_stat_statements' rows for the stack's database, if BENCH_PG_STATEMENTS preloaded it."""
    if os.environ.get("BENCH_PG_STATEMENTS") != "1":
        return None
    import psycopg
    from psycopg.rows import dict_row

    dsn = postgres.with_database(state["postgres"]["admin_dsn"], postgres.DATABASE)
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        return conn.execute(_STATEMENTS).fetchall()


def _print_statements(before: list[dict], after: list[dict], studies: int) -> None:
    """What Postgres ran over the ingest, per batch request (BATCH_STUDIES studies), busiest first."""
    was = {r["query"]: r for r in before}
    batches = studies / BATCH_STUDIES
    rows = []
    for r in after:
        b = was.get(r["query"], {"calls": 0, "rows": 0, "ms": 0.0, "blocks": 0})
        calls = r["calls"] - b["calls"]
        if calls > 0:
            rows.append((r["ms"] - b["ms"], calls, r["rows"] - b["rows"], r["blocks"] - b["blocks"], r["query"]))
    print(f"  Postgres statements per batch request ({BATCH_STUDIES} studies; times include waiting):")
    for ms, calls, n, blocks, query in sorted(rows, reverse=True)[:15]:
        print(f"    {ms / batches:7.2f} ms {calls / batches:5.2f} calls {n / batches:7.1f} rows "
              f"{blocks / batches:8.1f} blocks  {query}")


def main(studies: int) -> None:
    if os.environ.get("BENCH_PG_STATEMENTS") == "1":
        postgres.SETTINGS.update({"shared_preload_libraries": "pg_stat_statements", "pg_stat_statements.max": "5000"})
    if os.environ.get("BENCH_S3_REQUESTS") == "1":
        os.environ.setdefault(seaweed.METRICS_PORT, str(free_port()))
    data = pool_of(studies)
    Path(".radcurate").mkdir(exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=".radcurate"))  # inside the checkout, ignored
    try:
        state = local.up(home / "stack", services_to_run=("gateway",))
        gateway_pid = state["services"]["gateway"]["pid"]
        spy = _pyspy(gateway_pid)
        threads_before = thread_cpu(gateway_pid)
        statements_before = _statements(state)
        before, requests_before = stack_cpu(state), s3_requests(state)
        started = time.perf_counter()
        summary = asyncio.run(ingest_folder(state, data))
        seconds = time.perf_counter() - started
        after, requests_after = stack_cpu(state), s3_requests(state)
        statements_after = _statements(state)
        threads = {k: v - threads_before.get(k, 0.0) for k, v in thread_cpu(gateway_pid).items()}
        if spy is not None:
            spy.send_signal(2)  # py-spy writes what it has recorded on SIGINT
            spy.wait()
    finally:
        local.down(home / "stack")
        shutil.rmtree(home, ignore_errors=True)
    if summary.ingested != studies:
        raise SystemExit(f"ingested {summary.ingested} of {studies}: {summary.rejected[:3]}")
    rate = summary.ingested / seconds
    cpu = {k: 1000 * (after[k] - before.get(k, 0.0)) / studies for k in after}
    print(f"ingested {summary.ingested} studies in {seconds:.1f}s: {rate:.0f} studies/s "
          f"(target {TARGET_PER_SECOND:.0f}/s, ratio {rate / TARGET_PER_SECOND:.2f}) {load()}")
    print("  ms CPU per study: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
          + f"; total {sum(cpu.values()):.2f}")
    print("  the gateway's ms CPU per study by thread: " + ", ".join(
        f"{k} {1000 * v / studies:.2f}" for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v > 0))
    print_s3_requests(requests_before, requests_after, studies)
    if statements_before is not None and statements_after is not None:
        _print_statements(statements_before, statements_after, studies)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
