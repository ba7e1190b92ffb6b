"""CPU seconds each process of a local stack has spent, read from /proc: the demo's per-step figures.

On a machine shared with other work, wall time follows the load; each process's own CPU clock
does not, so the demo prints both for every step. Linux only: elsewhere every figure reads 0.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
CLIENT = "client"  # this process: the demo's ingest client and simulated panel


def process_cpu(pid: int | None) -> float:
    """User + system CPU of a process and of its children it has reaped (exited Postgres backends)."""
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / _TICK


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def stack_cpu(state: dict) -> dict[str, float]:
    """CPU seconds so far per part of the stack (S3 server, broker, Postgres with its live
    backends, each service) and of this process, by name."""
    parts = {name: (state.get(name) or {}).get("pid") for name in ("s3", "kafka", "postgres", "logtrim")}
    parts |= {svc: info.get("pid") for svc, info in (state.get("services") or {}).items()}
    out = {name: process_cpu(pid) for name, pid in parts.items() if pid}
    if parts.get("postgres"):  # live backends are not in the postmaster's reaped-children figure yet
        out["postgres"] += sum(process_cpu(child) for child in _children(parts["postgres"]))
    out[CLIENT] = process_cpu(os.getpid())
    return out


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per process between two readings (a process that restarted counts from 0)."""
    return {name: value - before.get(name, 0.0) if value >= before.get(name, 0.0) else value
            for name, value in after.items()}


class StepClock:
    """Wall time and CPU per process for consecutive steps: `lap(step, started)` ends a step,
    recording its wall seconds in `timings` (the demo's dict) and its CPU in `cpu`."""

    def __init__(self, state: dict, timings: dict[str, float]) -> None:
        self.state, self.timings = state, timings
        self.cpu: dict[str, dict[str, float]] = {}
        self.load: dict[str, float] = {}
        self._last = stack_cpu(state)

    def lap(self, step: str, wall_seconds: float) -> None:
        now = stack_cpu(self.state)
        self.timings[step] = wall_seconds
        self.cpu[step], self._last = spent(self._last, now), now
        self.load[step] = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0

    def lines(self) -> list[str]:
        """One line per step: wall time, the 1-min load average at its end, CPU per process."""
        return [f"  {step:<20} {self.timings[step]:7.1f} s wall (load {self.load[step]:.1f}), {describe(cpu)}"
                for step, cpu in self.cpu.items()]


def describe(cpu: dict[str, float], least: float = 0.05) -> str:
    """'9.1 s CPU: gateway 3.0, s3 2.1, …' — the processes that spent at least `least` seconds."""
    shown = ", ".join(f"{name} {value:.1f}" for name, value in sorted(cpu.items(), key=lambda kv: -kv[1])
                      if value >= least)
    return f"{sum(cpu.values()):.1f} s CPU" + (f": {shown}" if shown else "")
