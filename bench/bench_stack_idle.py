"""What the local stack costs while nothing happens: CPU per process over a quiet minute.

A fresh stack (`radcurate up` in a temporary state dir: SeaweedFS, Postgres, tansu and the five
services) is brought up, left to settle, and every part's own CPU (its whole process group from
/proc, Postgres backends included) is read over WINDOW seconds with no client connected.
SeaweedFS is started with its metrics port (`RADCURATE_S3_METRICS_PORT`), so its own request
counters also say what the broker asks of it per second (group heartbeats, watermark reads): the
S3 round trips that are ~90% of the broker's cost per request (see bench_broker_storage.py).

The figure matters beyond idle: the same polling runs while events trickle through, so it is paid
per second of any run, and per event whenever events are few.

`--up-only` measures `radcurate up` itself instead: wall time on a fresh state dir (what `make
demo` pays as "stack up") and the CPU every part of the stack and the calling process spent to get
there (each part started fresh, so its whole CPU so far). Another checkout's stack (main, for a
pair) is measured by running this file with that checkout first on PYTHONPATH, from that checkout.

Run: PYTHONPATH=$PWD .venv/bin/python bench/bench_stack_idle.py [--window 60] [--settle 20] [--repeat 1]
     [--set kafka_fetch_max_wait_ms=1000 ...] (a service setting for all five services) [--up-only]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench.bench_broker_storage import group_cpu_s, load, s3_requests
from radcurate.stack import local, seaweed
from radcurate.stack.procs import free_port


def parts(state: dict) -> dict[str, int]:
    """Each part's process-group leader, by name."""
    out = {p: int(state[p]["pid"]) for p in ("s3", "postgres", "kafka", "logtrim") if (state.get(p) or {}).get("pid")}
    out |= {svc: int(info["pid"]) for svc, info in (state.get("services") or {}).items()}
    return out


def measure(window: float, settle: float, settings: dict[str, str] | None = None) -> str:
    state_dir = Path(tempfile.mkdtemp(prefix="bench-idle-"))
    metrics = int(os.environ.setdefault(seaweed.METRICS_PORT, str(free_port())))
    try:
        started = time.perf_counter()
        # A service setting for every service (RADCURATE_<SVC>_<NAME>), over the stack's own values.
        service_env = {f"RADCURATE_{svc.upper()}_{name.upper()}": value
                       for svc in local.SERVICES for name, value in (settings or {}).items()}
        state = local.up(state_dir, service_env=service_env)
        up_s = time.perf_counter() - started
        time.sleep(settle)
        pids = parts(state)
        before = {name: group_cpu_s(pid) for name, pid in pids.items()}
        requests_before = s3_requests(metrics)
        time.sleep(window)
        after = {name: group_cpu_s(pid) for name, pid in pids.items()}
        requests = {k: (v - requests_before.get(k, 0.0)) / window for k, v in s3_requests(metrics).items()}
        per_s = {name: (after[name] - before[name]) * 1000 / window for name in pids}
        total = sum(per_s.values())
        rows = ", ".join(f"{name} {ms:.1f}" for name, ms in sorted(per_s.items(), key=lambda kv: -kv[1]))
        s3_line = ", ".join(f"{k} {v:.2f}" for k, v in sorted(requests.items()) if v) or "none"
        return (f"idle stack ({up_s:.0f} s to come up, {settle:.0f} s settled, {window:.0f} s window): "
                f"{total:.1f} ms CPU/s in all = {total / 10:.2f}% of a core — {rows} (ms/s); "
                f"S3 requests/s: {s3_line}  [{load()}]")
    finally:
        local.down(state_dir, wipe=True)
        shutil.rmtree(state_dir, ignore_errors=True)


def _own_cpu_s() -> float:
    """This process's CPU and that of the children it waited for (initdb, openssl)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure_up() -> str:
    """One `up` on a fresh state dir: wall seconds, and CPU seconds per part to get there."""
    state_dir = Path(tempfile.mkdtemp(prefix="bench-up-"))
    try:
        before = load()
        started, own = time.perf_counter(), _own_cpu_s()
        state = local.up(state_dir)
        up_s, own_s = time.perf_counter() - started, _own_cpu_s() - own
        cpu = {name: group_cpu_s(pid) for name, pid in parts(state).items()} | {"up": own_s}
        rows = ", ".join(f"{name} {s:.2f}" for name, s in sorted(cpu.items(), key=lambda kv: -kv[1]))
        return (f"up {up_s:.2f} s wall, {sum(cpu.values()):.1f} s CPU ({rows})  "
                f"[before: {before}; after: {load()}]")
    finally:
        local.down(state_dir, wipe=True)
        shutil.rmtree(state_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a service setting for all five services, e.g. kafka_fetch_max_wait_ms=1000")
    parser.add_argument("--up-only", action="store_true", help="measure `radcurate up` alone (wall and CPU)")
    args = parser.parse_args()
    settings = dict(item.split("=", 1) for item in args.set)
    if args.up_only:
        for _ in range(args.repeat):
            print(measure_up(), flush=True)
        return 0
    for _ in range(args.repeat):
        print(measure(args.window, args.settle, settings) + (f" {settings}" if settings else ""), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
