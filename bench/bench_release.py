"""The chain from the last vote to the downloaded, verified release, traced with timestamps
(issue 15 §2 "select + release" and the §5 export row).

A fresh local stack ingests a small synthetic archive, samples `--sampled` studies (3 readers each)
and lets the demo's simulated panel read them all; then, timed from the last vote's answer:

  decided     the funnel counts every sampled study decided (consensus caught up)
  requested   the release request answered (the gateway recorded the command)
  released    the gateway reports the release as released
  downloaded  the public set copied to a folder, every checksum verified

Next to the client's marks, the services' own timestamps of each hop (outbox rows written and
published, inbox rows applied; same clock) and every process's CPU in the window, from /proc.
The load average is printed next to every figure: on a shared machine compare runs in pairs.
The consensus log lines at the end say what the release reused: the de-identification checks made
when the studies were decided (RADCURATE_CONSENSUS_CHECK_AHEAD=true), and the accepted studies and
agreement report kept once the last one was (release_ahead.py), and where the release's wall time
went: the ahead round's accepted-studies read and card agreement (rows read, computed), and the
release's wait for that report beside its checks and its copies (each phase's wall seconds).
After the hops, "the critical path after all decided" places the consensus service's own marks on
the same clock (from its log: the ahead round's start and end, the release's start, its checks and
copies, its files written), and "the client's polls" says how many polls each wait made and their
mean answer time: the bench's own polling is work the stack does inside the window it measures.
The wait for "released" is one request that the gateway answers when the release commits
(`GET /releases/{id}?wait=`, as `radcurate release --wait` asks), not a poll.
BENCH_PYSPY=/path/to/py-spy records the consensus service over the chain (see `_pyspy`).

Run (this tree):  PYTHONPATH=$PWD .venv/bin/python bench/bench_release.py [--studies N] [--sampled N]
Run (main, for a pair): cd /work/main && PYTHONPATH=/work/main .venv/bin/python <this file> --data /tmp/x
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg

from radcurate.client import Gateway
from radcurate.cpu_clock import describe, spent, stack_cpu
from radcurate.demo import download_release, ingest_folder, synth_data, wait_for
from radcurate.simulate import load_truth, register_panel, run_panel
from radcurate.stack import local
from services.common.contracts import Protocol

CXR = Protocol.CXR.value


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


async def _count(api: Gateway, key: str) -> int:
    return int((await api.progress(CXR))["funnel"][key])


def _hops(state: dict, since: float) -> list[tuple[float, str]]:
    """The services' own timestamps of the chain's hops after `since` (epoch seconds)."""
    queries = {
        "gateway": [
            ("SELECT max(created_at) FROM outbox WHERE topic = 'vote-cast'", "gateway: last vote-cast written"),
            ("SELECT max(published_at) FROM outbox WHERE topic = 'vote-cast'", "gateway: last vote-cast published"),
            ("SELECT max(received_at) FROM inbox WHERE topic = 'consensus-reached'",
             "gateway: last consensus-reached applied"),
            ("SELECT max(created_at) FROM outbox WHERE topic = 'selection-requested'",
             "gateway: selection-requested written"),
            ("SELECT max(published_at) FROM outbox WHERE topic = 'selection-requested'",
             "gateway: selection-requested published"),
            ("SELECT max(received_at) FROM inbox WHERE topic = 'benchmark-released'",
             "gateway: benchmark-released applied"),
        ],
        "consensus": [
            ("SELECT max(received_at) FROM inbox WHERE topic = 'vote-cast'", "consensus: last vote-cast applied"),
            ("SELECT max(created_at) FROM outbox WHERE topic = 'consensus-reached'",
             "consensus: last consensus-reached written"),
            ("SELECT max(published_at) FROM outbox WHERE topic = 'consensus-reached'",
             "consensus: last consensus-reached published"),
            ("SELECT max(received_at) FROM inbox WHERE topic = 'selection-requested'",
             "consensus: selection-requested applied (release written)"),
            ("SELECT max(published_at) FROM outbox WHERE topic = 'benchmark-released'",
             "consensus: benchmark-released published"),
        ],
    }
    out = []
    for svc, rows in queries.items():
        with psycopg.connect(state["dsns"][svc]) as conn:
            for sql, what in rows:
                value = conn.execute(sql).fetchone()[0]
                if isinstance(value, dt.datetime):
                    out.append((value.timestamp() - since, what))
    return sorted(out)


_AHEAD = re.compile(r"ahead of a release: .* in ([\d.]+)s \(started ([\d.]+)s after the last decision noted")
_CHOSEN = re.compile(r"release \S+: \d+ accepted studies read in ([\d.]+)s \(\w+\); agreement report ([\d.]+)s"
                     r" \(\w+\); composed ([\d.]+)s; .* done ([\d.]+)s after \(checked ([\d.]+)s, copied ([\d.]+)s\)")
_BUILT = re.compile(r"release \S+ chosen in ([\d.]+)s, then (.*)$")


def _log_marks(lines: list[str], since: float) -> list[tuple[float, str]]:
    """The consensus service's own marks of the release, on the hops' clock (seconds after
    `since`, epoch), from its log lines (handlers.choose_release, publish_selection and the ahead
    round, release_ahead.py): each line's time is when its step ended, and the wall seconds it
    reports place the steps before it. The log's clock is the local wall clock to the millisecond."""
    out: list[tuple[float, str]] = []
    for line in lines:
        try:
            at = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S")) + int(line[20:23]) / 1000 - since
        except ValueError:
            continue
        if at < -1:  # an earlier round or release
            continue
        if m := _AHEAD.search(line):
            took = float(m[1])
            out += [(at - took - float(m[2]), "consensus: last decision noted"),
                    (at - took, "consensus: ahead round started (accepted studies, card agreement)"),
                    (at, "consensus: ahead round done (agreement kept)")]
        elif m := _CHOSEN.search(line):
            agreement, composed, after, checked, copied = (float(m[i]) for i in range(2, 7))
            # Its "agreement report" seconds run from the accepted studies read (and the
            # passing checks looked up) through the selection to the report in hand; the checks
            # and copies run beside that in a thread, and the line is written once they are done.
            waits = at - after - composed - agreement
            copies_done = at if after > 0.005 else at - after
            out += [(waits - float(m[1]), "consensus: release's accepted studies read (kept ahead)"),
                    (waits, "consensus: release selects, then waits for the agreement report"),
                    (waits + agreement, "consensus: release's agreement report in hand"),
                    (copies_done - copied - checked, "consensus: release's checks started"),
                    (copies_done - copied, "consensus: release's checks done, copies started"),
                    (copies_done, "consensus: release's copies done" if after > 0.005 else
                     "consensus: release's copies done (at the latest)"),
                    (at, "consensus: release chosen and composed")]
        elif m := _BUILT.search(line):
            phases = [float(x) for x in re.findall(r" ([\d.]+)s(?:,|$)", m[2])]
            out += [(at - sum(phases) - float(m[1]), "consensus: release started (its event prepared)"),
                    (at, "consensus: release's files written (manifest last)")]
    return out


class Polls:
    """A wait's polls: how many, and their mean answer time (what the bench itself asks of the
    gateway and Postgres inside the window it measures)."""

    def __init__(self) -> None:
        self.by_wait: dict[str, list[float]] = {}

    def counted(self, what: str, check: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[bool]]:
        times = self.by_wait.setdefault(what, [])

        async def timed() -> bool:
            t = time.perf_counter()
            try:
                return await check()
            finally:
                times.append(time.perf_counter() - t)
        return timed

    def lines(self) -> list[str]:
        return [f"    {what}: {len(t)} polls, {1000 * sum(t) / len(t):.1f} ms mean answer, {1000 * sum(t):.0f} ms"
                " in all" for what, t in self.by_wait.items() if t]


def _pyspy(state: dict) -> subprocess.Popen | None:
    """BENCH_PYSPY=/path/to/py-spy: record the consensus service (BENCH_PYSPY_SERVICE: another) over
    the chain's first BENCH_PYSPY_SECONDS (default 6) as collapsed stacks, BENCH_PYSPY_OUT (default
    /tmp/bench-release.pyspy.txt), to count by function with a script; BENCH_PYSPY_GIL=1 samples
    only the thread holding the GIL (where the service's Python CPU goes, not who waits for it);
    BENCH_PYSPY_IDLE=1 keeps idle samples too (where the chain's wall time goes: waits, sleeps, I/O)."""
    tool = os.environ.get("BENCH_PYSPY")
    if not tool:
        return None
    pid = state["services"][os.environ.get("BENCH_PYSPY_SERVICE", "consensus")]["pid"]
    return subprocess.Popen([tool, "record", "-p", str(pid), "-d", os.environ.get("BENCH_PYSPY_SECONDS", "6"),
                             "-r", "200", "--format", "raw", *["--gil"] * (os.environ.get("BENCH_PYSPY_GIL") == "1"),
                             *["--idle"] * (os.environ.get("BENCH_PYSPY_IDLE") == "1"),
                             "-o",
                             os.environ.get("BENCH_PYSPY_OUT", "/tmp/bench-release.pyspy.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _run(state: dict, data_dir: Path, studies: int, sampled: int, target: int, readers: int, seed: int,
               out: Path, poll: float) -> float:
    """The chain, printed; returns its start (epoch seconds: the last vote's answer)."""
    t = time.perf_counter()
    summary = await ingest_folder(state, data_dir)
    if summary.ingested != studies:
        raise RuntimeError(f"ingested {summary.ingested} of {studies}")
    api = Gateway(state["gateway_url"], state["admin_token"])
    try:
        async def suggested() -> bool:
            return await _count(api, "suggested") >= studies
        await wait_for("labels", suggested, timeout=1800)
        print(f"  ingest + labels: {time.perf_counter() - t:.1f}s (load {load()})", flush=True)
        panel = await register_panel(api, readers, seed)
        await api.request_sampling({"n": sampled, "readers_per_study": 3, "seed": seed}, protocol=CXR)

        async def assigned() -> bool:
            return await _count(api, "assignments") >= 3 * sampled
        await wait_for("assignments", assigned, timeout=1800)
        t = time.perf_counter()
        votes = await run_panel(api, panel, load_truth(data_dir / "truth.jsonl"))
        print(f"  {votes} votes read in {time.perf_counter() - t:.1f}s (load {load()})", flush=True)

        # --- the timed chain: from the last vote's answer ---------------------------------------
        spy = _pyspy(state)
        cpu0, epoch0, t0 = stack_cpu(state), time.time(), time.perf_counter()
        marks: list[tuple[float, str]] = []
        cpu_marks = [("catching up (last vote -> all decided)", cpu0)]

        def lap(step: str) -> None:
            cpu_marks.append((step, stack_cpu(state)))

        polls = Polls()

        async def decided() -> bool:
            return await _count(api, "decided") >= sampled
        await wait_for("consensus", polls.counted("all decided (/progress)", decided), interval=poll)
        marks.append((time.perf_counter() - t0, "client: every sampled study decided"))
        lap("the release (request -> released)")
        release_id = f"bench-release-{studies}-s{seed}"
        await api.request_release({"target_size": target, "seed": seed}, release_id, protocol=CXR)
        marks.append((time.perf_counter() - t0, "client: release request answered"))

        async def released() -> bool:  # as `radcurate release --wait` asks: answered when it commits
            return (await api.release(release_id, wait=30))["status"] == "released"
        await wait_for("the release", polls.counted("released (/releases/{id})", released), interval=poll)
        marks.append((time.perf_counter() - t0, "client: release reported released"))
        lap("the download (fetch + verify)")
        release = await api.release(release_id)
        download_release(state, release, out)
        total = time.perf_counter() - t0
        marks.append((total, "client: public set downloaded and verified"))
        cpu_marks.append(("", stack_cpu(state)))
        cpu = spent(cpu0, cpu_marks[-1][1])
        await asyncio.sleep(0.5)  # let the last rows' published_at land before reading them
        if spy is not None:
            spy.wait()
        print(f"\n  from the last vote to the verified download: {total:.2f}s (load {load()}), "
              f"{release['released_count']} released / {release['holdout_count']} holdout")
        for at, what in sorted(marks + _hops(state, epoch0)):
            print(f"    {at * 1000:8.0f} ms  {what}")
        print(f"  CPU in the window: {describe(cpu, least=0.01)}")
        for (step, before), (_, after) in zip(cpu_marks, cpu_marks[1:], strict=False):
            print(f"    {step}: {describe(spent(before, after), least=0.01)}")
        print(f"  the client's polls (every {poll * 1000:.0f} ms):")
        print("\n".join(polls.lines()))
        return epoch0
    finally:
        await api.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1_200, help="studies ingested")
    parser.add_argument("--sampled", type=int, default=1_000, help="studies sampled (3 readers each; paper 1,000)")
    parser.add_argument("--target", type=int, default=200, help="benchmark size (paper 200: 100 + 100 holdout)")
    parser.add_argument("--readers", type=int, default=17)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--poll", type=float, default=0.02,
                        help="seconds between the client's polls for 'all decided' (session 6: 0.1; 'released' is"
                             " waited for, not polled, since session 13)")
    parser.add_argument("--keep", action="store_true", help="keep the stack's state dir (logs) after the run")
    parser.add_argument("--data", type=Path, default=None, help="synthetic data folder (default data/bench-release-*)")
    args = parser.parse_args()
    data_dir = (args.data or Path("data") / f"bench-release-{args.studies}-{args.seed}").resolve()
    synth_data(args.studies, args.seed, data_dir)
    work = Path(tempfile.mkdtemp(prefix="bench-release-"))
    print(f"load average at start: {load()}; code from {Path(local.__file__).parents[2]}", flush=True)
    t = time.perf_counter()
    state = local.up(work / "stack")
    print(f"  stack up in {time.perf_counter() - t:.1f}s", flush=True)
    epoch0 = None
    try:
        epoch0 = asyncio.run(_run(state, data_dir, args.studies, args.sampled, args.target, args.readers, args.seed,
                                  work / "release", args.poll))
    finally:
        local.down(work / "stack")
        lines = (work / "stack" / "logs" / "consensus.log").read_text().splitlines()
        if epoch0 is not None:
            print("  the critical path after all decided, from the consensus log (ms after the last vote's answer):")
            for at, what in sorted(_log_marks(lines, epoch0)):
                print(f"    {at * 1000:8.0f} ms  {what}")
        ahead = [line for line in lines if "ahead of a release" in line]  # release_ahead.py's rounds
        for line in ahead[-3:] + [line for line in lines if " release " in line or "card agreement" in line]:
            print(f"  consensus log: {line.split(': ', 1)[-1]}")
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
