"""Why the light path's CPU per study grows from 1× to k× (issue 15 §6): bench_floor's funnel at one
scale with Postgres's and the S3 server's own counters, saved for a side-by-side with another scale.

One run = bench_floor.run_one(13,735 × k, 64 px images, no floor) on a fresh stack whose Postgres
preloads pg_stat_statements (track_io_timing on) and whose SeaweedFS serves its Prometheus metrics.
Just before the stack stops, it saves to RADCURATE_SCALE_OUT (default /tmp/scale-<k>x.json):
- every statement's calls, execution time, rows, shared blocks hit / read / dirtied and WAL bytes;
- each table's sequential and index scans, live / dead tuples, (auto)vacuum and analyze counts, size;
- checkpoints and WAL totals;
- the S3 server's requests and their seconds by S3 action (SeaweedFS_s3_request_total / _seconds).
Then `compare A.json B.json` prints, per study, what grew: the statements whose time per study
rose most, with time per call and blocks per call, the tables with sequential scans, and the S3
actions' counts and seconds per study.

  RADCURATE_BENCH_SCALE=1 PYTHONPATH=$PWD .venv/bin/python bench/scale_stats.py
  RADCURATE_BENCH_SCALE=3 PYTHONPATH=$PWD .venv/bin/python bench/scale_stats.py
  PYTHONPATH=$PWD .venv/bin/python bench/scale_stats.py compare /tmp/scale-1x.json /tmp/scale-3x.json

Session 8 (main b8b7fc3, load 7-17): statement counts per study are flat from 1x to 3x; what grew
was every service's 5 s metrics loop, whose backlog gauge and day-old prune each read the whole
outbox (39 -> 428 µs of execution per study, 1x at load 7 vs 3x at load 13; both time-driven,
so a loaded or longer run pays more of them): with migration 002's index the prune reads ~2
blocks and the gauge 120-350 (the backlog's dead index entries) at 1x and 3x alike, instead of
1,100 at 1x and 3,200 at 3x (0.01 / 0.2-0.5 ms per call instead of 4-29). Left growing:
full-page images after the 5-min checkpoint (0.14 -> 0.31 per study), autovacuum over larger
tables, and the S3 server's per-request latency as tansu's record objects pile up in one
directory per partition (at equal load: LIST 23 -> 58 ms, GET 10 -> 19, PUT 19 -> 31;
requests per study flat). pg_stat_statements' times include waiting: on this shared machine
compare processes' CPU (bench_floor's lines), not them.
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

sys.path.insert(0, str(Path(__file__).parent))
import bench_floor  # noqa: E402

from radcurate.stack import local, postgres, seaweed  # noqa: E402
from radcurate.stack.procs import free_port  # noqa: E402

BASE = 13_735
IMAGE = 64

STATEMENTS = """
SELECT queryid::text AS queryid, left(regexp_replace(query, '\\s+', ' ', 'g'), 160) AS query, calls,
       total_exec_time, rows, shared_blks_hit, shared_blks_read, shared_blks_dirtied, shared_blks_written,
       wal_bytes::float8 AS wal_bytes
  FROM pg_stat_statements WHERE calls > 0
"""
TABLES = """
SELECT schemaname || '.' || relname AS name, seq_scan, seq_tup_read, idx_scan, n_live_tup, n_dead_tup,
       n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, vacuum_count, autovacuum_count, autoanalyze_count,
       pg_total_relation_size(relid) AS bytes
  FROM pg_stat_user_tables
"""


def s3_metrics(port: int) -> dict[str, dict[str, float]]:
    """SeaweedFS's S3 requests by action: count, and seconds from the latency histogram's sum."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        for metric, field in (("SeaweedFS_s3_request_total{", "count"), ("SeaweedFS_s3_request_seconds_sum{", "s")):
            if line.startswith(metric) and (kind := re.search(r'type="([^"]+)"', line)):
                entry = out.setdefault(kind.group(1), {"count": 0.0, "s": 0.0})
                entry[field] += float(line.rsplit(" ", 1)[1])
    return out


def snapshot(state: dict, metrics_port: int) -> dict[str, Any]:
    dsn = postgres.with_database(state["postgres"]["admin_dsn"], postgres.DATABASE)
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        snap: dict[str, Any] = {
            "statements": conn.execute(STATEMENTS).fetchall(),
            "tables": conn.execute(TABLES).fetchall(),
            "checkpoints": conn.execute("SELECT * FROM pg_stat_checkpointer").fetchone(),
            "wal": conn.execute(
                "SELECT wal_records, wal_fpi, wal_bytes::float8 AS wal_bytes FROM pg_stat_wal").fetchone(),
        }
        # The sampler's pool: what each candidate row holds (the whole labels-suggested event),
        # and a few of them for a memory harness (bench/scale_sampler_memory.py).
        snap["candidates"] = conn.execute(
            "SELECT count(*) AS n, avg(pg_column_size(suggestion))::float8 AS stored,"
            " avg(length(suggestion::text))::float8 AS text FROM sampler.candidates").fetchone()
        sample = conn.execute("SELECT suggestion::text AS s FROM sampler.candidates LIMIT 500").fetchall()
        Path(os.environ.get("RADCURATE_SCALE_SUGGESTIONS", "/tmp/scale-suggestions.jsonl")).write_text(
            "".join(r["s"] + "\n" for r in sample))
    snap["s3"] = s3_metrics(metrics_port)
    snap["memory"] = {svc: memory_mib(info["pid"]) for svc, info in (state.get("services") or {}).items()
                      if info.get("pid") and Path(f"/proc/{info['pid']}").exists()}
    return snap


def memory_mib(pid: int) -> dict[str, float]:
    """A process's resident memory now (VmRSS) and at its peak (VmHWM), in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def run(scale: int, out: Path) -> None:
    metrics_port = free_port()
    os.environ[seaweed.METRICS_PORT] = str(metrics_port)
    postgres.SETTINGS.update({"shared_preload_libraries": "pg_stat_statements", "track_io_timing": "on",
                              "pg_stat_statements.max": "5000"})
    taken: dict[str, Any] = {}
    real_down = local.down

    def down_after_snapshot(state_dir: Path, *args: Any, **kwargs: Any) -> Any:
        state = local.load(state_dir)
        try:
            if state.get("postgres") and not taken:
                taken.update(snapshot(state, metrics_port))
        except Exception as exc:  # noqa: BLE001 - an interrupted run has no counters to save; stop it anyway
            print(f"no snapshot: {exc!r}", file=sys.stderr)
        return real_down(state_dir, *args, **kwargs)

    local.down = down_after_snapshot  # type: ignore[assignment]
    studies = BASE * scale
    try:
        figures = bench_floor.run_one(studies, False, IMAGE)
    finally:
        local.down = real_down  # type: ignore[assignment]
        if os.environ.get("RADCURATE_BENCH_KEEP_DATA", "0") != "1":
            import shutil

            shutil.rmtree(bench_floor.light_pool_dir(studies, IMAGE), ignore_errors=True)
    out.write_text(json.dumps({"scale": scale, "studies": studies, "figures": figures,
                               "load": os.getloadavg(), **taken}, default=str))
    print(f"saved {out} {bench_floor.load()}")


def by_text(statements: list[dict]) -> dict[str, dict]:
    """Statements summed by their text (calls, time, blocks)."""
    out: dict[str, dict] = {}
    for st in statements:
        acc = out.setdefault(st["query"], {"calls": 0, "total_exec_time": 0.0, "shared_blks_hit": 0,
                                            "shared_blks_read": 0})
        for key in acc:
            acc[key] += st[key]
    return out


def compare(a_path: Path, b_path: Path, top: int = 25) -> None:
    a, b = json.loads(a_path.read_text()), json.loads(b_path.read_text())
    na, nb = a["studies"], b["studies"]
    print(f"{a['scale']}× ({na:,} studies, load {a['load'][0]:.1f}) vs {b['scale']}× ({nb:,}, load {b['load'][0]:.1f})")
    # By statement text: each service's copy of a shared statement (outbox, inbox) has its own
    # queryid (its own schema's tables), and so does every fresh stack.
    sa, sb = by_text(a["statements"]), by_text(b["statements"])
    total_a = sum(1000 * s["total_exec_time"] / na for s in sa.values())
    total_b = sum(1000 * s["total_exec_time"] / nb for s in sb.values())
    print(f"statements' execution time per study: {total_a:.0f} → {total_b:.0f} µs")
    print("  Δµs/study  µs/study a→b   calls/study a→b   µs/call a→b   blks/call a→b   query")
    empty = {"calls": 0, "total_exec_time": 0.0, "shared_blks_hit": 0, "shared_blks_read": 0}
    rows = []
    for text in set(sa) | set(sb):
        o, s = sa.get(text, empty), sb.get(text, empty)
        us_a, us_b = 1000 * o["total_exec_time"] / na, 1000 * s["total_exec_time"] / nb
        rows.append((us_b - us_a, us_a, us_b, o, s, text))

    def per_call(x: dict, key: str) -> float:
        return x[key] / x["calls"] if x["calls"] else 0.0

    def blks(x: dict) -> float:
        return (x["shared_blks_hit"] + x["shared_blks_read"]) / x["calls"] if x["calls"] else 0.0

    for delta, us_a, us_b, o, s, text in sorted(rows, key=lambda r: -abs(r[0]))[:top]:
        print(f"  {delta:+8.1f}  {us_a:6.1f} → {us_b:6.1f}  {o['calls'] / na:5.2f} → {s['calls'] / nb:5.2f}"
              f"  {1000 * per_call(o, 'total_exec_time'):7.1f} → {1000 * per_call(s, 'total_exec_time'):7.1f}"
              f"  {blks(o):6.1f} → {blks(s):6.1f}   {text[:110]}")
    ta = {t["name"]: t for t in a["tables"]}
    print("tables (b): seq scans, rows read by them per study (a → b), dead tuples, autovacuums, size")
    for t in sorted(b["tables"], key=lambda t: -t["seq_tup_read"])[:15]:
        o = ta.get(t["name"], {"seq_tup_read": 0, "seq_scan": 0})
        print(f"  {t['name']:40s} seq {o['seq_scan']:>6} → {t['seq_scan']:>6}, rows {o['seq_tup_read'] / na:8.1f} → "
              f"{t['seq_tup_read'] / nb:8.1f}/study; idx {t['idx_scan']}; dead {t['n_dead_tup']:,} of "
              f"{t['n_live_tup']:,}; autovac {t['autovacuum_count']} autoanalyze {t['autoanalyze_count']};"
              f" {t['bytes'] / 2**20:.1f} MiB")
    for label, x, n in (("a", a, na), ("b", b, nb)):
        print(f"checkpoints {label}: {x.get('checkpoints')}; WAL {x['wal']['wal_bytes'] / n:.0f} B/study, "
              f"FPI {x['wal']['wal_fpi'] / n:.2f}/study")
    for label, x in (("a", a), ("b", b)):
        print(f"services' memory {label} (MiB, now / peak): " + ", ".join(
            f"{k} {v.get('VmRSS', 0):.0f}/{v.get('VmHWM', 0):.0f}" for k, v in x.get("memory", {}).items())
            + f"; candidates {x.get('candidates')}")
    print("S3 by action: requests per study and ms per request, a → b")
    for kind in sorted(set(a["s3"]) | set(b["s3"])):
        ea, eb = a["s3"].get(kind, {"count": 0, "s": 0}), b["s3"].get(kind, {"count": 0, "s": 0})
        ms = lambda e: 1000 * e["s"] / e["count"] if e["count"] else 0.0  # noqa: E731
        print(f"  {kind:28s} {ea['count'] / na:6.2f} → {eb['count'] / nb:6.2f}/study,"
              f" {ms(ea):6.2f} → {ms(eb):6.2f} ms")


def main() -> int:
    if sys.argv[1:2] == ["compare"]:
        compare(Path(sys.argv[2]), Path(sys.argv[3]))
        return 0
    scale = int(os.environ.get("RADCURATE_BENCH_SCALE", "1"))
    run(scale, Path(os.environ.get("RADCURATE_SCALE_OUT", f"/tmp/scale-{scale}x.json")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
