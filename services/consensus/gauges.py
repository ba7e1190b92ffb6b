"""Gauges read from the consensus tables: studies per curation state, agreement per label (the
protocols that have one, e.g. Fleiss' kappa per CXR label).

Refreshed on a timer rather than on every vote: kappa is a statistic over all decided studies,
and recomputing it inside each vote's transaction would make voting slower as the panel grows.
Each tick first reads the tables' row counts (`repo.gauge_fingerprint`) and recomputes only what
they say changed, so an idle consensus scores nothing. It used to re-read and re-score every
decided study at every tick: at the paper's 13,735 decided studies, 1.6-2.9 s of CPU per tick
(110-200 ms/s at one tick per 15 s; `bench/bench_consensus_gauges.py`). While the tables keep
changing, kappa is scored within KAPPA_CORE_SHARE of a core. The counts come from the tables
themselves, not from pg_stat's counters, which lag the commits they count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from psycopg_pool import AsyncConnectionPool

from services.common import metrics, protocols
from services.common.protocols import CurationProtocol
from services.consensus import repo

log = logging.getLogger(__name__)
T = TypeVar("T")
# The most of a core the live kappa gauge may take while the tables keep changing.
KAPPA_CORE_SHARE = 0.02


def _has_kappas(plugin: CurationProtocol) -> bool:
    """Whether the protocol reports per-label agreement (the base class's label_kappas reports none)."""
    return type(plugin).label_kappas is not CurationProtocol.label_kappas


async def refresh(pool: AsyncConnectionPool, last: dict[str, int] | None = None, *,
                  kappas: bool = True) -> tuple[dict[str, int], float]:
    """Set `radcurate_studies{state}` and `radcurate_fleiss_kappa{label}` from the tables, as far as
    they changed since the refresh that returned `last` (None: all of it); `kappas=False` leaves
    kappa for a later refresh even if its inputs changed. Returns the fingerprint to pass to the
    next refresh (still owing kappa where it was left) and the CPU seconds kappa took."""
    async with pool.connection() as conn:
        now = await repo.gauge_fingerprint(conn)
        states = await repo.study_states(conn) if now != last else None
        # Kappa's inputs, the decided studies with their effective labels and counted votes, change
        # only with a decision or an adjudication: a vote is counted only while its study is open.
        changed = last is None or (now["decisions"], now["adjudications"]) != (last["decisions"],
                                                                               last["adjudications"])
        rows = {name: await repo.report_rows(conn, name, provenance=False) for name in protocols.names()
                if changed and kappas and _has_kappas(protocols.get(name))}
        await conn.rollback()
    for state, n in (states or {}).items():
        metrics.STUDIES.labels(state).set(n)
    cpu = 0.0
    for name, (studies, votes) in rows.items():
        # label ids do not collide across protocols' taxonomies
        scored, seconds = await asyncio.to_thread(_with_cpu, protocols.get(name).label_kappas, studies, votes)
        cpu += seconds
        for label, kappa in scored.items():
            metrics.FLEISS_KAPPA.labels(label).set(float("nan") if kappa is None else kappa)
    if changed and not kappas:  # still owed: the next refresh sees the change again
        now = {**now, "decisions": last["decisions"] if last else -1,
               "adjudications": last["adjudications"] if last else -1}
    return now, cpu


def _with_cpu(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    """`fn(*args)` and the CPU seconds this thread spent in it (run in a worker thread)."""
    started = time.thread_time()
    return fn(*args), time.thread_time() - started


async def refresh_forever(pool: AsyncConnectionPool, seconds: float) -> None:
    """Refresh the gauges every `seconds`, each time only as far as the tables changed. Kappa is
    scored again no sooner than its last scoring's CPU allows within KAPPA_CORE_SHARE of a core:
    at the paper's 13,735 decided studies one scoring costs ~1.3 s, and while votes arrive the
    tables change at every tick (then every ~65 s instead of every 15 s; at 1,500 studies, every tick)."""
    last: dict[str, int] | None = None
    kappa_due = 0.0
    while True:
        try:
            last, cpu = await refresh(pool, last, kappas=time.monotonic() >= kappa_due)
            if cpu:
                kappa_due = time.monotonic() + cpu / KAPPA_CORE_SHARE
        except Exception:  # noqa: BLE001 - a gauge refresh must never stop the service
            last = None  # recompute everything next time: this one may have stopped half-way
            with contextlib.suppress(Exception):
                log.warning("gauge refresh failed", exc_info=True)
        await asyncio.sleep(seconds)
