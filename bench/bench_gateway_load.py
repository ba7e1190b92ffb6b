"""Gateway under load (issue 15 §3), against the gateway of the local stack, in three parts:

1. paced: 200 readers, each reading a study every ~2 s (~100 votes/s offered, open loop: a slow
   answer does not lower the offered rate; the schedule: BENCH_START, BENCH_FIRST_VOTE below),
   p50/p99 of `GET /reviews/next` and of the vote;
2. saturated: the same readers as fast as they can; votes/s and server-side CPU per vote — the
   CPU the gateway, Postgres, the broker and the S3 server processes spent in the window (from
   /proc), nothing subtracted; the window stays open after the last answer until the stack is back
   to its idle rate, so downstream work lagging the votes is counted; the other services and the
   load client's own CPU are reported apart;
3. reference: pgbench (from the embedded Postgres) running a script equivalent to one vote (lock
   the assignment, insert the vote, mark the assignment voted, insert the outbox row, commit) on
   copies of the gateway's tables; the vote's server CPU is reported as a ratio to pgbench's
   Postgres CPU per transaction.

Targets: p99 < 50 ms for both calls at ~100 votes/s offered; <= 2 ms of server CPU per vote.
Every figure is printed with the load average (the machine is shared).
Run: PYTHONPATH=$PWD .venv/bin/python bench/bench_gateway_load.py [studies] [readers] [paced_seconds]
The gateway makes no display derivatives here (RADCURATE_GATEWAY_DERIVATIVE_WORKERS=0): the readers
fetch no images, and decoding them at assignment would be counted as the votes' CPU.
Set BENCH_PYSPY=/path/to/py-spy to record a flame graph of the gateway during the saturated part
(BENCH_PYSPY_FORMAT=raw: collapsed stacks, to count by function with a script; BENCH_PYSPY_SERVICE=consensus
or sampler records that service instead, whose share of CPU per vote is counted too; a comma-separated list,
e.g. gateway,consensus,sampler, records each at once, one file each: BENCH_PYSPY_OUT with the service's name
before its suffix).
BENCH_VOTE_NEXT=0 makes each reader ask `GET /reviews/next` before every vote (two requests per study);
by default a vote asks for the reader's next assignment too (`?next=true`: one request per study, as
the reviewer page and the simulated panel read).
BENCH_FIRST_PROBE=N (default 0: off) first takes N readers' first requests apart, one at a time, before
the idle window (their tokens have left the gateway's 5 s token cache again by the paced part): a
health check on a new connection and again on it (the connection's cost), then `GET /reviews/next`:
the gateway process's first read of all (one reader: a one-time cost of the process), the other
readers' with the token not yet seen (the token look-up's cost), and again with it cached; wall time
of each and the server's CPU per request of each kind.
The paced part's schedule: BENCH_START=spread (the default) starts each reader at a random offset within
its first 2 s period, drawn from a generator seeded with BENCH_SEED (default 0), so runs and pairs offer
the same schedule; BENCH_START=together starts all readers at once (the worst first second).
BENCH_FIRST_VOTE=read (the default) has a reader vote one period after its assignment arrived (it reads
the study meanwhile), so the paced part offers ~100 requests/s from its first second; at-once has the
first vote follow the first `next` at once, as sessions 4-8 measured: the first 2 s then offer each
reader's two requests, ~200 requests/s, twice the rate after (its `next` p99 is that burst's).
BENCH_S3_REQUESTS=1 starts SeaweedFS with its metrics port and prints the saturated part's S3 requests per vote
by bucket and action (the bucket "tansu" is the broker's log: produce, fetch, offset commits).
BENCH_CLIENT=raw drives the readers with a hand-written HTTP/1.1 client (RawClient) instead of httpx:
httpx's own CPU per vote is larger than the server's, and on two cores it then sets the latencies.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
from bench_floor import print_s3_requests, s3_requests  # this folder (run as a script)

from radcurate.client import Gateway
from radcurate.demo import ingest_folder
from radcurate.keepalive import Answer, KeepAliveConnection
from radcurate.stack import local, postgres, seaweed
from radcurate.stack.postgres import pg_bin_dir
from radcurate.stack.procs import free_port
from radcurate.synth import synth_cxr

TARGET_P99_MS, TARGET_CPU_MS_PER_VOTE = 50.0, 2.0
READ_EVERY_S = 2.0  # a brisk reader: one study every ~2 s
TICK = os.sysconf("SC_CLK_TCK")
# The load client: httpx (the default, as the issue measured) or `raw`, hand-written HTTP/1.1 at a
# fraction of httpx's CPU (RawClient: the simulated panel's client), so the client is not what limits the offered load.
CLIENT = os.environ.get("BENCH_CLIENT", "httpx")
# Whether a vote's answer carries the reader's next assignment (`?next=true`), saving `GET /next`.
VOTE_NEXT = os.environ.get("BENCH_VOTE_NEXT", "1") != "0"
# The paced part's schedule (see _starts and _paced_reader): when each reader starts, the generator's
# seed, and whether the first vote waits one period (read) or follows the first `next` at once.
START = os.environ.get("BENCH_START", "spread")
SEED = int(os.environ.get("BENCH_SEED", "0"))
FIRST_VOTE = os.environ.get("BENCH_FIRST_VOTE", "read")
if START not in ("spread", "together") or FIRST_VOTE not in ("read", "at-once"):
    raise SystemExit("BENCH_START is spread or together; BENCH_FIRST_VOTE is read or at-once")


def _load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


# --- CPU of process trees, from /proc ---------------------------------------------------------

def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (ppid, CPU seconds so far) for every live process."""
    table: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after "(comm)": state ppid ... utime stime cutime cstime (fields 14-17 of stat(5)). A child's
        # CPU moves into its parent's cutime/cstime when it ends (e.g. a pgbench connection's backend),
        # so counting both over a whole tree loses nothing and counts nothing twice.
        table[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / TICK)
    return table


def _tree_cpu(roots: dict[str, int]) -> dict[str, dict[int, float]]:
    """name -> {pid: CPU seconds} of each root and all its descendants (Postgres backends, workers)."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[str, dict[int, float]] = {}
    for name, root in roots.items():
        seen, todo = {}, [root]
        while todo:
            pid = todo.pop()
            if pid in table and pid not in seen:
                seen[pid] = table[pid][1]
                todo.extend(children.get(pid, ()))
        out[name] = seen
    return out


class CpuWindow:
    """CPU spent by each named process tree between start() and stop(); a process that ended inside
    the window is lost (the stack's processes are long-lived; Postgres backends are pooled)."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots

    def start(self) -> None:
        self._before = _tree_cpu(self.roots)
        self._client_before = time.process_time()
        self._t0 = time.perf_counter()

    def stop(self) -> tuple[dict[str, float], float, float]:
        after = _tree_cpu(self.roots)
        # name -> {pid: CPU seconds in the window}: _postgres_by_role splits Postgres's by its backends' roles
        self.per_pid = {name: {pid: cpu - self._before[name].get(pid, 0.0) for pid, cpu in procs.items()}
                        for name, procs in after.items()}
        per = {name: sum(procs.values()) for name, procs in self.per_pid.items()}
        return per, time.process_time() - self._client_before, time.perf_counter() - self._t0

    def settle(self, idle_cores: float, *, step_s: float = 0.25, limit_s: float = 30.0) -> float:
        """Wait, the window still open, until the stack is back to its idle rate (two steps in a
        row within 0.05 of a core of it): the votes' downstream work (the relay, the broker,
        consensus and the sampler applying them) lands in the window even when it lags the last
        answer. Without this a short saturated window leaves that work out and flatters CPU per
        vote. Returns the seconds waited."""
        started = time.perf_counter()
        last, calm = sum(sum(p.values()) for p in _tree_cpu(self.roots).values()), 0
        while calm < 2 and time.perf_counter() - started < limit_s:
            time.sleep(step_s)
            now = sum(sum(p.values()) for p in _tree_cpu(self.roots).values())
            calm = calm + 1 if (now - last) / step_s <= idle_cores + 0.05 else 0
            last = now
        return time.perf_counter() - started


def _postgres_by_role(state: dict, window: CpuWindow) -> dict[str, float]:
    """Postgres's CPU in the window by what spent it: each service connects as its own role, so a
    backend's role names the service (pooled backends live as long as the window); the rest are
    Postgres's own processes (WAL writer, checkpointer, autovacuum: "background")."""
    dsn = postgres.with_database(state["postgres"]["admin_dsn"], postgres.DATABASE)
    with psycopg.connect(dsn, autocommit=True) as conn:
        roles = dict(conn.execute("SELECT pid, usename FROM pg_stat_activity").fetchall())
    out: dict[str, float] = {}
    for pid, cpu in window.per_pid.get("postgres", {}).items():
        role = roles.get(pid)
        name = "background" if role is None else role if role in state["services"] else "other"
        out[name] = out.get(name, 0.0) + cpu
    return out


def _roots(state: dict) -> dict[str, int]:
    roots = {part: state[part]["pid"] for part in ("postgres", "kafka", "s3") if (state.get(part) or {}).get("pid")}
    roots.update({svc: info["pid"] for svc, info in state["services"].items()})
    return roots


SERVER = ("gateway", "postgres", "kafka", "s3")


def _cpu_report(label: str, per: dict[str, float], client_s: float, votes: int, seconds: float,
                idle: dict[str, float], requests: int) -> float:
    """Print the window's CPU per vote; `idle` (CPU s per s of the idle stack) gives the second,
    idle-subtracted figure: at a few votes/s the stack's idle polling is most of the first."""
    server = sum(per.get(p, 0.0) for p in SERVER)
    net = server - seconds * sum(idle.get(p, 0.0) for p in SERVER)
    others = {k: v for k, v in per.items() if k not in SERVER}
    ms = server * 1000 / max(votes, 1)
    print(f"{label}: server CPU {ms:.2f} ms/vote (target <= {TARGET_CPU_MS_PER_VOTE:.0f} ms, ratio "
          f"{ms / TARGET_CPU_MS_PER_VOTE:.2f}) = " + ", ".join(
              f"{p} {per.get(p, 0.0) * 1000 / max(votes, 1):.2f}" for p in SERVER)
          + f"; net of the idle stack {net * 1000 / max(votes, 1):.2f} ms/vote"
          + f"; gateway alone {per.get('gateway', 0.0) * 1000 / max(requests, 1):.2f} ms/request ({requests} requests)"
          + f"; other services {sum(others.values()) * 1000 / max(votes, 1):.2f} ms/vote ("
          + ", ".join(f"{k} {v * 1000 / max(votes, 1):.2f}" for k, v in others.items())
          + f"); every process but the load client {(server + sum(others.values())) * 1000 / max(votes, 1):.2f} ms/vote"
          + f"; load client {client_s * 1000 / max(votes, 1):.2f} ms/vote"
          f" ({client_s / seconds:.2f} cores); {_load()}")
    return ms


# --- the readers --------------------------------------------------------------------------------

async def _prepare(state: dict, data: Path, studies: int, n_readers: int) -> list[str]:
    await ingest_folder(state, data)
    admin = Gateway(state["gateway_url"], state["admin_token"])
    try:
        while (f := (await admin.progress())["funnel"])["suggested"] < f["ingested"]:
            await asyncio.sleep(0.5)
        tokens = [await admin.create_user(f"load-{i:03d}", "reviewer") for i in range(n_readers)]
        await admin.request_sampling({"n": studies, "readers_per_study": 3, "seed": 0, "min_per_label": 0})
        while (await admin.progress())["funnel"]["assignments"] < 3 * studies:
            await asyncio.sleep(0.5)
    finally:
        await admin.aclose()
    return tokens


class Run:
    def __init__(self) -> None:
        self.lat: dict[str, list[float]] = {"next": [], "vote": []}
        self.errors: list[str] = []
        self.votes = 0
        self.began = time.perf_counter()
        # (seconds since the phase began, latency) per request of each kind: whether the slow ones
        # are a reader's first request or the phase's first seconds, whichever request they are
        self.when: dict[str, list[tuple[float, float]]] = {"next": [], "vote": []}

    @property
    def requests(self) -> int:
        return len(self.lat["next"]) + len(self.lat["vote"])


class RawClient:
    """One reader's kept-alive HTTP/1.1 connection (BENCH_CLIENT=raw): the simulated panel's own
    client (`radcurate.keepalive.KeepAliveConnection`, on the LLM transport's httptools connection).

    httpx costs the load client ~6-15 ms of CPU per vote (two requests) here, more than the server
    it measures: on two cores shared with the stack, the client's own event loop then sets the
    latencies. This costs a fraction of a millisecond per vote. A dropped connection is raised as
    httpx.ReadError, so it is retried and counted like httpx's."""

    def __init__(self, url: str) -> None:
        self._connection = KeepAliveConnection(url, timeout=60)

    async def get(self, path: str, headers: dict[str, str]) -> Answer:
        return await self._connection.request("GET", path, headers=headers)

    async def post(self, path: str, headers: dict[str, str], json: Any) -> Answer:
        return await self._connection.request("POST", path, headers=headers, json_body=json)

    def close(self) -> None:
        self._connection.close()


async def _timed(run: Run, op: str, send: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """One request, timed; a dropped connection (keep-alive race) is retried and counted."""
    while True:
        t0 = time.perf_counter()
        try:
            resp = await send()
        except httpx.TransportError as exc:
            run.errors.append(type(exc).__name__)
            continue
        run.lat[op].append(time.perf_counter() - t0)
        run.when[op].append((t0 - run.began, run.lat[op][-1]))
        return resp


class Reader:
    """One load reader: its token, and the assignment the last vote's answer carried (`ASK`: none
    carried, ask `GET /next`; None: the worklist is empty)."""

    ASK: Any = object()

    def __init__(self, token: str) -> None:
        self.auth = {"Authorization": f"Bearer {token}"}
        self.following: Any = Reader.ASK
        self.start = 0.0  # the paced reader's first request, seconds after the phase began (_starts)


async def _read_one(client: httpx.AsyncClient | RawClient, reader: Reader, run: Run) -> bool:
    """Next assignment (from the last vote's answer, or asked for), then a vote on it; False when
    the worklist is empty."""
    auth = reader.auth
    a = reader.following
    if a is Reader.ASK:
        resp = await _timed(run, "next", lambda: client.get("/api/v1/reviews/next", headers=auth))
        a = None if resp.status_code == 204 else resp.json()
    if a is None:
        return False
    path = f"/api/v1/reviews/{a['assignment_id']}/vote" + ("?next=true" if VOTE_NEXT else "")
    r = await _timed(run, "vote", lambda: client.post(
        path, headers={**auth, "Idempotency-Key": a["assignment_id"]},
        json={"verdict": "agree_all", "confirm": True, "seconds_spent": 20}))
    assert r.status_code in (200, 201), r.text
    voted = r.json() if VOTE_NEXT else {}
    reader.following = voted["next_assignment"] if "next_assignment" in voted else Reader.ASK
    run.votes += 1
    return True


async def _paced_reader(client: httpx.AsyncClient | RawClient, reader: Reader, run: Run, until: float) -> None:
    """Reads on a fixed schedule, one study every READ_EVERY_S from the reader's own start
    (`reader.start`, seconds after the phase began): open loop, a slow answer does not move the
    next one. FIRST_VOTE=read: the first `GET /next` at the start, each vote one period after the
    assignment it votes on arrived (the reader reads it meanwhile), so every second offers one
    request per reader per period; at-once: the first vote follows the first `next` at once, as
    sessions 4-8 measured, and the first period offers each reader's two requests."""
    due = run.began + reader.start
    if FIRST_VOTE == "read":
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        resp = await _timed(run, "next", lambda: client.get("/api/v1/reviews/next", headers=reader.auth))
        reader.following = None if resp.status_code == 204 else resp.json()
        due += READ_EVERY_S
    while due < until:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        if not await _read_one(client, reader, run):
            return
        due += READ_EVERY_S


async def _eager_reader(client: httpx.AsyncClient | RawClient, reader: Reader, run: Run, until: float) -> None:
    while time.perf_counter() < until and await _read_one(client, reader, run):
        pass


def _starts(n_readers: int) -> list[float]:
    """Each reader's first request, in seconds after the phase began (BENCH_START): spread, a
    random offset within its first period from a seeded generator (BENCH_SEED), so two runs offer
    the same schedule; together, every reader at 0 (the worst first second)."""
    if START == "together":
        return [0.0] * n_readers
    rng = random.Random(SEED)
    return [rng.uniform(0, READ_EVERY_S) for _ in range(n_readers)]


async def _phase(url: str, tokens: list[str], seconds: float, paced: bool) -> Run:
    run = Run()
    reader = _paced_reader if paced else _eager_reader
    readers = [Reader(t) for t in tokens]
    for r, start in zip(readers, _starts(len(readers)), strict=True):
        r.start = start
    # FIRST_VOTE=read: the votes begin one period later, so the phase runs one period longer and
    # each reader casts as many votes as at-once in `seconds`.
    seconds += READ_EVERY_S if paced and FIRST_VOTE == "read" else 0.0
    if CLIENT == "raw":
        clients = [RawClient(url) for _ in tokens]
        run.began = time.perf_counter()
        until = run.began + seconds
        try:
            await asyncio.gather(*(reader(c, r, run, until) for c, r in zip(clients, readers, strict=True)))
        finally:
            for c in clients:
                c.close()
    else:
        limits = httpx.Limits(max_connections=len(tokens), max_keepalive_connections=len(tokens))
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
            run.began = time.perf_counter()
            until = run.began + seconds
            await asyncio.gather(*(reader(client, r, run, until) for r in readers))
    if run.errors:
        print(f"{len(run.errors)} dropped connections retried ({sorted(set(run.errors))})")
    return run


def _pct(xs: list[float], p: int) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[p - 1] * 1000 if len(xs) > 1 else xs[0] * 1000


def _latency_report(run: Run) -> None:
    for op in ("next", "vote"):
        if not run.lat[op]:
            continue
        p50, p99 = _pct(run.lat[op], 50), _pct(run.lat[op], 99)
        print(f"  {op:5s}: n={len(run.lat[op])} p50 {p50:.1f} ms  p99 {p99:.1f} ms (target p99 < "
              f"{TARGET_P99_MS:.0f} ms, ratio {p99 / TARGET_P99_MS:.2f}); {_load()}")
        buckets: dict[int, list[float]] = {}
        for began, seconds in run.when[op]:
            buckets.setdefault(min(int(began), 5), []).append(seconds)
        print("         by second since the phase began (5: the rest), n / p50 / max ms: " + ", ".join(
            f"{b}: {len(xs)} / {_pct(xs, 50):.1f} / {max(xs) * 1000:.1f}" for b, xs in sorted(buckets.items())))


# --- the pgbench reference ----------------------------------------------------------------------

VOTE_SCRIPT = """\\set i :i + 1
\\set k :client_id * 1000000 + :i
BEGIN;
SET LOCAL synchronous_commit = on;
SELECT a.study_id, a.reader_id, a.status, a.suggested, a.unmapped, a.protocol, v.vote_id
  FROM pb.assignments a LEFT JOIN pb.votes v USING (assignment_id) WHERE a.assignment_id = 'pb-' || :k FOR UPDATE OF a;
INSERT INTO pb.votes (vote_id, assignment_id, study_id, reader_id, judgement, comment, seconds_spent,
  idempotency_key, confirmed_omissions)
  VALUES ('v-' || :k, 'pb-' || :k, 's-' || :k, 'load-001',
  '{"protocol": "cxr-label-verification", "verdict": "agree_all", "added_labels": [], "removed_labels": []}',
  '', 20, 'pb-' || :k, '[]');
UPDATE pb.assignments SET status = 'voted' WHERE assignment_id = 'pb-' || :k;
INSERT INTO pb.outbox (event_id, topic, msg_key, payload) VALUES ('e-' || :k, 'vote-cast', 's-' || :k,
  '{"vote_id": "v", "study_id": "s", "reader_id": "load-001", "assignment_id": "a",
    "judgement": {"verdict": "agree_all"}}')
  ON CONFLICT (event_id) DO NOTHING;
END;
"""


def _pgbench(state: dict, postgres_pid: int, clients: int = 8, per_client: int = 1500) -> float:
    """Postgres CPU ms per transaction of VOTE_SCRIPT on copies of the gateway's tables."""
    info = psycopg.conninfo.conninfo_to_dict(postgres.with_database(state["postgres"]["admin_dsn"], postgres.DATABASE))
    with psycopg.connect(psycopg.conninfo.make_conninfo(**info), autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS pb CASCADE")
        conn.execute("CREATE SCHEMA pb")
        for table in ("assignments", "votes", "outbox"):
            conn.execute(f"CREATE TABLE pb.{table} (LIKE gateway.{table} INCLUDING ALL)")
        conn.execute("ALTER TABLE pb.votes ADD FOREIGN KEY (assignment_id) REFERENCES pb.assignments")
        # Real assignment rows (one as a template), renamed so each transaction votes on its own.
        conn.execute(
            "INSERT INTO pb.assignments SELECT (jsonb_populate_record(NULL::pb.assignments, to_jsonb(t)"
            " || jsonb_build_object('assignment_id', 'pb-' || k, 'study_id', 's-' || k, 'status', 'open'))).*"
            " FROM (SELECT * FROM gateway.assignments LIMIT 1) t,"
            " generate_series(0, %s) c, generate_series(1, %s) i, LATERAL (SELECT c * 1000000 + i AS k) kk",
            (clients - 1, per_client))
        conn.execute("VACUUM ANALYZE pb.assignments")
    env = {**os.environ, "PGPASSWORD": info["password"]}
    argv = [str(pg_bin_dir() / "pgbench"), "-n", "-M", "prepared", "-c", str(clients), "-j", "2",
            "-t", str(per_client), "-D", "i=0", "-f", "/dev/stdin",
            "-h", info["host"], "-p", str(info["port"]), "-U", info["user"], info["dbname"]]
    window = CpuWindow({"postgres": postgres_pid})
    window.start()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, input=VOTE_SCRIPT, capture_output=True, text=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    per, _, seconds = window.stop()
    if done.returncode != 0:
        raise SystemExit(f"pgbench failed: {done.stderr.strip()[-2000:]}")
    tps = next((ln for ln in done.stdout.splitlines() if ln.startswith("tps")), "tps ?")
    txns = clients * per_client
    pg_ms = per["postgres"] * 1000 / txns
    own = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000 / txns
    print(f"pgbench, one vote's SQL as one transaction ({clients} clients, {txns} txns, {seconds:.1f} s, {tps}):"
          f" Postgres CPU {pg_ms:.3f} ms/txn, pgbench's own {own:.3f} ms/txn; {_load()}")
    with psycopg.connect(psycopg.conninfo.make_conninfo(**info), autocommit=True) as conn:
        conn.execute("DROP SCHEMA pb CASCADE")
    return pg_ms


# --- main ---------------------------------------------------------------------------------------

def _pyspy(gateway_pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    exe = os.environ.get("BENCH_PYSPY")
    if not exe:
        return None
    return subprocess.Popen([exe, "record", "-p", str(gateway_pid), "-d", str(int(seconds)), "-r", "50",
                             "-s", "-o", str(out), "-f", os.environ.get("BENCH_PYSPY_FORMAT", "flamegraph")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _first_probe(url: str, tokens: list[str], window: CpuWindow) -> None:
    """Why a reader's first request is slower than the rest (BENCH_FIRST_PROBE): each step for all
    probed readers in turn, one request at a time, so no request queues behind another of the bench."""
    clients = [KeepAliveConnection(url, timeout=60) for _ in tokens]

    def next_read(c: KeepAliveConnection, t: str) -> Awaitable[Answer]:
        return c.request("GET", "/api/v1/reviews/next", headers={"authorization": f"Bearer {t}"})

    # (label, request, which readers): the first `next` is the gateway process's first read of all,
    # taken apart from the other readers' first, so a one-time cost of the process (lazy set-up,
    # cold statements) is told from a cost every reader's first request pays.
    every, first, rest = slice(None), slice(0, 1), slice(1, None)
    steps: list[tuple[str, Callable[[KeepAliveConnection, str], Awaitable[Answer]], slice]] = [
        ("healthz, new connection", lambda c, t: c.request("GET", "/healthz"), every),
        ("healthz, kept connection", lambda c, t: c.request("GET", "/healthz"), every),
        ("next, the process's first read (one reader)", next_read, first),
        ("next, token not yet seen (the other readers)", next_read, rest),
        ("next, token cached", next_read, every),
    ]
    try:
        for label, step, which in steps:
            walls: list[float] = []
            window.start()
            for client, token in zip(clients[which], tokens[which], strict=True):
                t0 = time.perf_counter()
                answer = await step(client, token)
                walls.append(time.perf_counter() - t0)
                assert answer.status_code in (200, 204), answer.text
            per, _, _ = window.stop()
            server = {k: per.get(k, 0.0) * 1000 / len(walls) for k in ("gateway", "postgres")}
            walls.sort()
            print(f"  first-request probe, {label}: wall p50 {walls[len(walls) // 2] * 1000:.2f} ms,"
                  f" p90 {walls[int(len(walls) * 0.9)] * 1000:.2f} ms; server CPU ms/request: gateway"
                  f" {server['gateway']:.2f}, postgres {server['postgres']:.2f}; {_load()}")
    finally:
        for client in clients:
            client.close()


def main(studies: int, n_readers: int, paced_s: float) -> None:
    if os.environ.get("BENCH_S3_REQUESTS") == "1":
        os.environ.setdefault(seaweed.METRICS_PORT, str(free_port()))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synth"
        synth_cxr(studies, 0, data)
        # No display derivatives made in the background: decoding images at assignment costs ~1 s of
        # CPU per object in the gateway process, which would be measured as the votes' cost (the
        # readers here fetch no images; bench_reviewer_page measures that path).
        state = local.up(Path(tmp) / "stack", service_env={"RADCURATE_GATEWAY_DERIVATIVE_WORKERS": "0"})
        try:
            tokens = asyncio.run(_prepare(state, data, studies, n_readers))
            roots = _roots(state)
            print(f"{studies} studies, {3 * studies} assignments, {n_readers} readers, load client {CLIENT},"
                  f" {'the next assignment with the vote' if VOTE_NEXT else 'GET /next before each vote'}; {_load()}")

            window = CpuWindow(roots)
            probed = int(os.environ.get("BENCH_FIRST_PROBE", "0"))
            if probed:
                asyncio.run(_first_probe(state["gateway_url"], tokens[:probed], window))
            window.start()
            time.sleep(10)
            per, _, seconds = window.stop()
            idle = {k: v / seconds for k, v in per.items()}
            print("idle stack, CPU ms/s (subtracted only from the \"net\" figures below): " + ", ".join(
                f"{k} {v * 1000 / seconds:.1f}" for k, v in per.items()) + f"; {_load()}")

            window.start()
            run = asyncio.run(_phase(state["gateway_url"], tokens, paced_s, paced=True))
            settled = window.settle(sum(idle.values()))
            per, client_s, seconds = window.stop()
            offered = n_readers / READ_EVERY_S
            # FIRST_VOTE=read: the first period is only the readers' first `next`; the votes come after it
            voting = seconds - settled - (READ_EVERY_S if FIRST_VOTE == "read" else 0.0)
            print(f"paced: {n_readers} readers, one study each every {READ_EVERY_S:.0f} s (~{offered:.0f} votes/s"
                  f" offered; start {START}, seed {SEED}, first vote {FIRST_VOTE}): {run.votes} votes in"
                  f" {voting:.1f} s = {run.votes / voting:.0f} votes/s; CPU counted over {seconds:.1f} s, until"
                  " the stack was idle again")
            _latency_report(run)
            _cpu_report("  paced", per, client_s, run.votes, seconds, idle, run.requests)
            by_role = _postgres_by_role(state, window)
            print("  paced: Postgres CPU by role, ms/vote: " + ", ".join(
                f"{k} {v * 1000 / max(run.votes, 1):.3f}" for k, v in sorted(by_role.items(), key=lambda kv: -kv[1]))
                + f"; {_load()}")

            services = os.environ.get("BENCH_PYSPY_SERVICE", "gateway").split(",")
            out = Path(os.environ.get("BENCH_PYSPY_OUT", "gateway-flame.svg")).resolve()
            flames = {svc: out if len(services) == 1 else out.with_name(f"{out.stem}-{svc}{out.suffix}")
                      for svc in services}
            spies = {svc: _pyspy(roots[svc], 15, flame) for svc, flame in flames.items()}
            requests_before = s3_requests(state)
            window.start()
            run = asyncio.run(_phase(state["gateway_url"], tokens, 3600, paced=False))
            settled = window.settle(sum(idle.values()))
            per, client_s, seconds = window.stop()
            for svc, spy in spies.items():
                if spy:
                    spy.wait()
                    print(f"py-spy flame graph of the {svc}: {flames[svc]}")
            reading = seconds - settled
            print(f"saturated: {n_readers} readers as fast as they can: {run.votes} votes in {reading:.1f} s ="
                  f" {run.votes / reading:.0f} votes/s; CPU counted over {seconds:.1f} s, until the stack"
                  f" was idle again; {_load()}")
            _latency_report(run)
            vote_ms = _cpu_report("  saturated", per, client_s, run.votes, seconds, idle, run.requests)
            print_s3_requests(requests_before, s3_requests(state), run.votes, "vote")
            by_role = _postgres_by_role(state, window)
            print("  saturated: Postgres CPU by role, ms/vote: " + ", ".join(
                f"{k} {v * 1000 / max(run.votes, 1):.3f}" for k, v in sorted(by_role.items(), key=lambda kv: -kv[1]))
                + f"; {_load()}")

            # Idle again, every study now decided: what the stack costs at rest with data in it
            # (consensus's gauges used to re-score every decided study every 15 s).
            window.start()
            time.sleep(20)
            per, _, seconds = window.stop()
            print("idle stack after the votes, CPU ms/s: " + ", ".join(
                f"{k} {v * 1000 / seconds:.1f}" for k, v in per.items()) + f"; {_load()}")

            pg_ms = _pgbench(state, roots["postgres"])
            print(f"server CPU per vote / pgbench Postgres CPU per vote transaction: {vote_ms:.2f} / {pg_ms:.3f}"
                  f" = {vote_ms / pg_ms:.1f}x (at the target: {TARGET_CPU_MS_PER_VOTE / pg_ms:.1f}x); {_load()}")
        finally:
            local.down(Path(tmp) / "stack")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1500, int(sys.argv[2]) if len(sys.argv) > 2 else 200,
         float(sys.argv[3]) if len(sys.argv) > 3 else 15.0)
