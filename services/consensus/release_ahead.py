"""What a release needs, prepared before it is requested: taking the de-identification checks and
the agreement report off the chain from the last vote to a verified release (issue 15).

- Each study decided accepted (by its votes, or by a curator's ruling) has its DICOM objects read
  and checked against the profile shortly after the decision commits; the results go to
  `object_checks` (object_checks.py says when a release may reuse one).
- Once the last assigned study of a protocol is decided, its accepted studies are read and the
  agreement figures its dataset card carries are computed (`CurationProtocol.card_agreement`:
  for chest X-rays the report without its AI-versus-expert tables, read without provenance
  columns, ~0.09 s of CPU at 1,000 studies against ~0.16 s for the whole report), and both are
  kept with the row counts they were read from (`repo.agreement_fingerprint`). A release reuses
  them only while those counts are unchanged: any later vote, re-vote, decision or adjudication
  changes them and the release reads and computes them again, as before.
- Whether a protocol's last study is decided is asked after every round of decisions (up to ~20
  times a second while votes stream in). Counting its undecided studies read every assigned
  study, each time: ~0.9 ms of CPU (Postgres and this process) at 1,000 studies, ~5 ms at
  13,735, growing with the archive (bench/bench_release_ahead.py). Instead a round looks at a
  few studies remembered open (`OPEN_WITNESSES`, one index look-up each); only once all of them
  are decided does it read every study again, to find more (those with the fewest votes, the
  likeliest to stay open) or that none is left. A decision is never removed, so a remembered
  study still open proves the protocol is not done; "all decided" still comes only from reading
  every study.
- What a release imports on first use (pydicom for the checks and the dataset card, ~0.6 s of CPU;
  numpy.ma, which the report's first percentile interval loads) is imported in the background at
  the first decision.

Everything here is an optimisation: a failure is logged and the release does the work itself.
The handlers only note what was decided (`note`); the work runs in one background task, after a
short pause that lets a burst of decisions share one round of checks and the decision commit.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from services.common.objectstore import ObjectStore
from services.consensus import repo
from services.consensus.object_checks import PROFILE_VERSION, check_objects, import_checker

log = logging.getLogger(__name__)
# Seconds to wait after a decision before checking: decisions come in bursts, and the decision's
# transaction must commit before its study reads as decided.
SETTLE_SECONDS = 0.05
RECHECKS, RECHECK_SECONDS = 5, 0.1  # looking again for the last decision's commit (it is on the release's path)
CHECK_BATCH = 400  # objects per round of checks
CHECK_EVERY_SECONDS = 0.5  # while decisions stream in, checks gather for up to this long
OPEN_WITNESSES = 64  # undecided studies remembered per protocol (see the module's docstring)

AgreementFn = Callable[[psycopg.AsyncConnection, str], Awaitable[dict[str, Any]]]


def _import_release_modules() -> None:
    """Import what a release first uses (off the chain: see the module's docstring)."""
    import_checker()
    import numpy.ma  # noqa: F401 - numpy loads it lazily, at the first np.percentile (numpy.unique)


class ReleaseAhead:
    """Checks ahead and the cached agreement report of one consensus process."""

    def __init__(self, store: ObjectStore | None, bucket: str, agreement: AgreementFn) -> None:
        self._store, self._bucket, self._agreement = store, bucket, agreement
        self._accepted: set[str] = set()  # studies decided accepted, objects not yet checked
        self._protocols: set[str] = set()  # protocols with a decision since their report was cached
        self._wake = asyncio.Event()
        # (what, protocol) -> (fingerprint, the agreement report or the accepted studies)
        self._kept_results: dict[tuple[str, str], tuple[tuple[int, ...], Any]] = {}
        self._tries: dict[str, int] = {}  # protocol -> rechecks after its last decision, while some are open
        self._open: dict[str, list[str]] = {}  # protocol -> some of its studies last seen undecided
        self._running: dict[tuple[str, str], tuple[tuple[int, ...], asyncio.Future[Any]]] = {}  # being computed
        self.catch_up = True  # the first round looks at every accepted study (a restart may have left some)
        self._importing: threading.Thread | None = None
        self._last_note = 0.0  # time.monotonic() of the last decision noted
        self._last_note_perf = 0.0  # and its time.perf_counter(), for the round's log line
        self._timings: dict[str, float] = {}  # wall seconds of this round's steps, for its log line

    def note(self, study_id: str, protocol: str, accepted: bool) -> None:
        """A decision or ruling is being written for `study_id` (called inside its transaction: if
        that rolls back, the round finds nothing new to do)."""
        self._last_note = time.monotonic()
        self._last_note_perf = time.perf_counter()
        if self._importing is None:  # a release can follow now: its checks and card read DICOM
            self._importing = threading.Thread(target=_import_release_modules, name="release-imports", daemon=True)
            self._importing.start()
        if accepted:
            self._accepted.add(study_id)
        self._protocols.add(protocol)
        self._tries.pop(protocol, None)
        self._wake.set()

    async def agreement(self, conn: psycopg.AsyncConnection, protocol: str) -> tuple[dict[str, Any], bool]:
        """The protocol's agreement report, and whether it was prepared ahead (`_kept`)."""
        report, reused = await self._kept("agreement", protocol, conn, self._agreement)
        return dict(report), reused

    async def accepted(self, conn: psycopg.AsyncConnection, protocol: str) -> tuple[list[dict], bool]:
        """The protocol's accepted studies (`repo.accepted_studies`: what a release selects from), and
        whether they were read ahead (`_kept`: they are read from the same tables as the report, so
        the report's fingerprint covers them too). The rows are shared: callers read them, never
        change them; they stay in memory while they are current (a lumbar study's ~40 instances each)."""
        studies, reused = await self._kept("accepted", protocol, conn, repo.accepted_studies)
        return list(studies), reused

    async def _kept(self, kind: str, protocol: str, conn: psycopg.AsyncConnection,
                    compute: Callable[[psycopg.AsyncConnection, str], Awaitable[Any]]) -> tuple[Any, bool]:
        """What `compute` gives for the protocol, and whether it was prepared ahead: kept while its
        inputs are unchanged, or being computed for the same inputs right now (then this waits for
        that computation instead of running a second one beside it). Otherwise computed now, and kept.

        The fingerprint is read before the rows: the tables only grow, so a result is never kept
        under counts its rows do not match unless the counts have already moved on (and the next
        call computes it again)."""
        fingerprint = await repo.agreement_fingerprint(conn)
        key = (kind, protocol)
        cached = self._kept_results.get(key)
        if cached is not None and cached[0] == fingerprint:
            return cached[1], True
        running = self._running.get(key)
        if running is not None and running[0] == fingerprint:
            try:
                return await asyncio.shield(running[1]), True
            except Exception:  # noqa: BLE001 - its owner's failure: compute it here instead
                log.warning("the %s computed ahead failed; computing it for the release", kind)
        task = asyncio.ensure_future(compute(conn, protocol))
        self._running[key] = (fingerprint, task)
        try:
            result = await task
        finally:
            if self._running.get(key, (None, None))[1] is task:
                del self._running[key]
        self._kept_results[key] = (fingerprint, result)
        return result, False

    async def run_forever(self, pool: AsyncConnectionPool) -> None:
        """Do each round's work after its settle pause, until cancelled. While decisions keep
        coming (one noted during the pause), checks wait and gather for up to CHECK_EVERY_SECONDS
        (fewer, larger rounds: each costs a few statements); the first quiet pause checks them all."""
        last_checks = 0.0
        while True:
            if not self.catch_up:
                await self._wake.wait()
            await asyncio.sleep(SETTLE_SECONDS)
            self._wake.clear()
            now = time.monotonic()
            streaming = now - self._last_note < SETTLE_SECONDS and now - last_checks < CHECK_EVERY_SECONDS
            if not streaming:
                last_checks = now
            elif self._accepted:  # look again after the next pause: checked once quiet, or after CHECK_EVERY_SECONDS
                self._wake.set()
            try:
                await self.run_once(pool, checks=not streaming)
            except asyncio.CancelledError:
                raise
            except Exception:  # an optimisation only: the release does the work itself
                log.exception("checking ahead of a release failed; the release will check for itself")
                await asyncio.sleep(5)

    async def run_once(self, pool: AsyncConnectionPool, checks: bool = True) -> dict[str, Any]:
        """One round: check the noted (or, first, every) accepted study's unchecked objects (unless
        `checks` is false: they wait for a later round) and, beside that, keep the accepted studies
        and agreement report of each noted protocol with no study left undecided (the release after
        the last decision waits for both: neither waits for the other)."""
        if not checks and not self.catch_up:
            studies: set[str] = set()
        else:
            studies, self._accepted = self._accepted, set()
        protocols, self._protocols = self._protocols, set()
        catch_up, self.catch_up = self.catch_up, False
        started = time.perf_counter()
        try:
            checked, cached = await asyncio.gather(self._check(pool, None if catch_up else studies),
                                                   self._keep_reports(pool, protocols))
        except BaseException:
            self._accepted |= studies  # tried again next round
            self._protocols |= protocols
            self.catch_up |= catch_up
            raise
        if checked or cached:
            log.info("ahead of a release: %d objects checked, agreement kept for %s, in %.3fs (started %.3fs after"
                     " the last decision noted; %s)", checked, cached or "none", time.perf_counter() - started,
                     started - self._last_note_perf, ", ".join(f"{k} {v:.3f}s" for k, v in self._timings.items()))
        self._timings = {}
        return {"checked": checked, "agreement_cached": cached}

    async def _check(self, pool: AsyncConnectionPool, studies: set[str] | None) -> int:
        """Check and record the unchecked objects of `studies` (None: of every accepted study)."""
        if self._store is None or studies == set():
            return 0
        async with pool.connection() as conn:
            todo = await repo.objects_to_check(conn, None if studies is None else sorted(studies), PROFILE_VERSION)
            await conn.rollback()
        checked = 0
        for i in range(0, len(todo), CHECK_BATCH):
            keys = [o["object_key"] for o in todo[i:i + CHECK_BATCH]]
            checks = await asyncio.to_thread(check_objects, self._store, self._bucket, keys)
            async with pool.connection() as conn:
                await repo.save_object_checks(conn, PROFILE_VERSION, checks)
            checked += len(checks)
        return checked

    async def _keep_reports(self, pool: AsyncConnectionPool, protocols: set[str]) -> list[str]:
        """Read and keep the accepted studies, and compute and keep the agreement report, of each
        protocol with no study left undecided (the studies first: the release's checks and copies
        start from them, the report is only needed for the card)."""
        kept = []
        for protocol in sorted(protocols):
            async with pool.connection() as conn:
                undecided = await self._undecided(conn, protocol)
                if not undecided:
                    started = time.perf_counter()
                    await self.accepted(conn, protocol)
                    read = time.perf_counter()
                    await self.agreement(conn, protocol)
                    self._timings.update({"accepted studies read": read - started,
                                          "agreement computed": time.perf_counter() - read})
                    kept.append(protocol)
                await conn.rollback()
            # The noted decision may not have committed yet (a consumer commits a whole batch):
            # look again a few times, then wait for the next decision.
            tries = self._tries.pop(protocol, 0)
            if undecided and tries < RECHECKS:
                self._tries[protocol] = tries + 1
                asyncio.get_running_loop().call_later(RECHECK_SECONDS, self._recheck, protocol)
        return kept

    async def _undecided(self, conn: psycopg.AsyncConnection, protocol: str) -> bool:
        """Whether some assigned study of the protocol has no decision: first among the studies
        remembered open (cheap), then, once none of them is, among all of them (remembering up
        to OPEN_WITNESSES of those found)."""
        remembered = self._open.get(protocol)
        still = await repo.still_undecided(conn, remembered) if remembered else []
        if not still:
            still = await repo.undecided_studies(conn, protocol, OPEN_WITNESSES)
        self._open[protocol] = still
        return bool(still)

    def _recheck(self, protocol: str) -> None:
        if protocol in self._tries:
            self._protocols.add(protocol)
            self._wake.set()
