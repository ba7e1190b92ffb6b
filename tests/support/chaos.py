"""The fault test's machinery (issue 11 item 7): a CXR funnel driven as an operator and a reader
panel would drive it — retrying what a client retries — while a fault injector SIGKILLs one part
of the local stack at a time and restarts it, as a crash and its supervisor would.

- `FaultPlan`: which part dies in which step of the funnel, drawn from a seed; every round kills
  each of the five services, the broker, Postgres and the S3 server once, and the LLM endpoint
  goes away for `llm_outage_s` while the first reports wait for extraction.
- `Chaos`: kills a part's whole process group (Postgres with its backends, as an OOM kill does)
  and restarts exactly that part on the same port and data dir (`radcurate up` for that part
  alone), so the services that stay up must reconnect by themselves. A service that exits on its
  own (its consume loop gave up: issue 11 item 4) is restarted like Kubernetes would, and counted.
- `run_funnel`: ingest → extract/map → sample → read → decide → release → download.
- `Trail`: the services' delivery log (`RADCURATE_<SERVICE>_DELIVERY_LOG=1`): every event a relay
  published (topic, partition, offset, event id), every record a consumer took (its outcome) and
  every offset it committed. `lost_effects` names the events a service applied and committed its
  offset past, yet whose inbox row is gone: the signature of a commit the database lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg

from radcurate.client import Gateway, GatewayError
from radcurate.demo import download_release, ingest_folder
from radcurate.simulate import CONFIRMATION_TYPE, SimReader, Truth, load_truth, register_panel
from radcurate.stack import local
from radcurate.stack.procs import alive
from tests.conftest import schema_dsn
from tests.support.fake_openai import FakeOpenAI

T = TypeVar("T")
SERVICES = local.SERVICES
INFRA = ("kafka", "postgres", "s3")
STAGES = ("ingest", "label", "sample", "read", "release")
# Where a part's death hurts: the steps in which it has work in flight.
WHEN = {"extractor": ("ingest", "label"), "mapper": ("ingest", "label"), "sampler": ("label", "sample"),
        "consensus": ("sample", "read", "release"), "gateway": STAGES,
        "kafka": STAGES, "postgres": STAGES, "s3": STAGES}
READERS, READERS_PER_STUDY = 9, 3


@dataclass(frozen=True)
class Fault:
    target: str  # a service, "kafka", "postgres", "s3" or "llm"
    stage: str
    delay_s: float  # after the stage begins (or after the stage's previous fault recovered)
    down_s: float  # how long the part stays dead before its restart


@dataclass
class FaultPlan:
    faults: list[Fault]

    @classmethod
    def draw(cls, seed: int, rounds: int, llm_outage_s: float) -> FaultPlan:
        rng = random.Random(f"faults|{seed}")
        faults = []
        for _ in range(rounds):
            for target in rng.sample([*SERVICES, *INFRA], len(SERVICES) + len(INFRA)):
                faults.append(Fault(target, rng.choice(WHEN[target]), rng.uniform(0.0, 2.0), rng.uniform(0.5, 3.0)))
        if llm_outage_s > 0:  # first, down before the ingest's first study: every report waits for it
            # (A delay drawn into the stage let a fast funnel label all its studies before the outage.)
            faults.insert(0, Fault("llm", "ingest", 0.0, llm_outage_s))
        return cls(faults)

    def at(self, stage: str) -> list[Fault]:
        return [f for f in self.faults if f.stage == stage]


@dataclass
class Chaos:
    """Kills and restarts parts of the stack in `state_dir`; `None` plan: an unfaulted run."""

    state_dir: Path
    service_env: dict[str, str]
    llm: FakeOpenAI | None = None
    plan: FaultPlan | None = None
    done: list[tuple[str, str, float]] = field(default_factory=list)  # (target, stage, seconds to recover)
    self_exits: list[str] = field(default_factory=list)  # services that stopped on their own
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, faults included
    labelled_when_llm_returned: int | None = None  # studies with suggested labels as the LLM came back
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _llm_down: asyncio.Event = field(default_factory=asyncio.Event)  # set once an outage has stopped the LLM

    def state(self) -> dict[str, Any]:
        return local.load(self.state_dir)

    @contextlib.asynccontextmanager
    async def stage(self, name: str) -> AsyncIterator[None]:
        """Run the stage's faults while the body does the stage's work; wait for both."""
        faults = self.plan.at(name) if self.plan else []
        task = asyncio.create_task(self._inject(name, faults))
        t = time.monotonic()
        if faults and faults[0].target == "llm" and not faults[0].delay_s:
            await self._llm_down.wait()  # the stage's work starts with the LLM already down
        try:
            yield
        finally:
            await task
            self.timings[name] = round(time.monotonic() - t, 1)

    async def _inject(self, stage: str, faults: list[Fault]) -> None:
        for fault in faults:
            await asyncio.sleep(fault.delay_s)
            t = time.monotonic()
            async with self._lock:
                if fault.target == "llm":
                    await self._llm_outage(fault.down_s)
                else:
                    await self._kill_and_restart(fault.target, fault.down_s)
            self.done.append((fault.target, stage, time.monotonic() - t))
            print(f"fault: {fault.target} killed in {stage}, back after {time.monotonic() - t:.1f}s", flush=True)

    async def _kill_and_restart(self, target: str, down_s: float) -> None:
        before = self.state()
        info = before["services"][target] if target in SERVICES else before[target]
        pid = info["pid"]
        # Postgres's backends each call setsid(): its process group is the postmaster alone, so its
        # children are killed by pid too (all at once, as an OOM kill of the container does).
        backends = children(pid) if target == "postgres" else []  # before they are orphaned
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        for child in backends:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        while alive(pid):
            await asyncio.sleep(0.05)
        await asyncio.sleep(down_s)
        after = await self._restart(target)
        where = "ports" if target == "s3" else "port"
        now = after["services"][target] if target in SERVICES else after[target]
        assert now[where] == info[where], f"{target} came back elsewhere: {info[where]} -> {now[where]}"

    async def _restart(self, target: str) -> dict[str, Any]:
        """`radcurate up` for this part alone: the rest must find it again by themselves."""
        wanted = (target,) if target in SERVICES else ()
        return await asyncio.to_thread(local.up, self.state_dir, wanted, self.service_env)

    async def _llm_outage(self, seconds: float) -> None:
        assert self.llm is not None, "an LLM outage needs the LLM backends"
        await asyncio.to_thread(self.llm.stop)
        self._llm_down.set()
        try:
            await asyncio.sleep(seconds)
            self.labelled_when_llm_returned = await asyncio.to_thread(self._labelled)
        finally:
            await asyncio.to_thread(self.llm.start)

    def _labelled(self) -> int:
        state = self.state()
        with psycopg.connect(schema_dsn(state["postgres"]["admin_dsn"], "mapper")) as conn:
            return conn.execute("SELECT count(*) FROM suggestions").fetchone()[0]

    async def supervise(self) -> None:
        """Restart a service that exited on its own (as Kubernetes restarts a container)."""
        while True:
            await asyncio.sleep(1.0)
            async with self._lock:
                services = self.state().get("services") or {}
                dead = [svc for svc, info in services.items() if not alive(info.get("pid"))]
                for svc in dead:
                    self.self_exits.append(svc)
                    await self._restart(svc)


def children(pid: int) -> list[int]:
    """The direct children of `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


async def retrying(what: str, call: Callable[[], Awaitable[T]], timeout: float = 300) -> T:
    """What a client does while a part is down: try again until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except (httpx.TransportError, GatewayError) as exc:
            if isinstance(exc, GatewayError) and exc.status < 500:
                raise
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: no answer for {timeout:.0f}s ({exc})") from exc
            await asyncio.sleep(0.5)


async def wait_funnel(api: Gateway, key: str, value: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while (count := (await retrying("progress", api.progress))["funnel"][key]) < value:
        if time.monotonic() > deadline:
            raise AssertionError(f"the funnel's {key} stayed at {count} of {value} for {timeout:.0f}s")
        await asyncio.sleep(0.5)


async def ingest_until_done(state: dict, data_dir: Path, studies: int, timeout: float = 300) -> None:
    """Ingest the folder, again after a failure: ingest is idempotent (a study already in is a
    duplicate), so a pass that ends without error has every study in."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            summary = await ingest_folder(state, data_dir, concurrency=4)
        except Exception as exc:  # noqa: BLE001 - Postgres or S3 killed under us: a bulk loader retries
            if time.monotonic() > deadline:
                raise AssertionError(f"ingest kept failing for {timeout:.0f}s: {exc!r}") from exc
            await asyncio.sleep(1.0)
            continue
        assert not summary.rejected, summary.rejected[:3]
        assert summary.ingested + summary.duplicates == studies
        return


async def read_worklist(api: Gateway, reader: SimReader, truth: dict[str, Truth], seed: int) -> int:
    """One simulated reader's votes, each retried with the same Idempotency-Key until it lands.

    A reader judges from a random stream seeded by (seed, reader, study), not from one stream in
    the order the worklist happens to come: the order of a worklist follows when assignments
    reached the gateway, which faults shift, and a decision must not depend on it."""
    me = api.as_user(reader.token)
    votes = 0
    while (a := await retrying("next assignment", me.next_assignment)) is not None:
        reader.rng = random.Random(f"read|{seed}|{reader.user_id}|{a['study_id']}")
        body = reader.judge({s["label_id"] for s in a["suggested"]}, truth[a["study_id"]], a["label_ids"])
        key = f"fault-test|{a['assignment_id']}"

        async def vote(body: dict = body, assignment_id: str = a["assignment_id"], key: str = key) -> None:
            try:
                await me.vote(assignment_id, body, idempotency_key=key)
            except GatewayError as exc:
                if exc.status != 409 or exc.problem.get("type") != CONFIRMATION_TYPE:
                    raise
                await me.vote(assignment_id, {**body, "confirm": True}, idempotency_key=key)

        await retrying(f"{reader.user_id}'s vote", vote)
        votes += 1
    return votes


async def request_sampling_once(api: Gateway, plan: dict) -> None:
    """POST the sampling run unless one exists (a lost 202 must not start a second run)."""
    async def once() -> None:
        if not (await api.request("GET", "/api/v1/sampling-runs")).json():
            await api.request_sampling(plan)
    await retrying("sampling request", once)


async def request_release_once(api: Gateway, plan: dict, release_id: str) -> None:
    async def once() -> None:
        try:
            await api.request_release(plan, release_id)
        except GatewayError as exc:
            if exc.status != 409:  # already requested (our earlier try got through)
                raise
    await retrying("release request", once)


async def run_funnel(chaos: Chaos, data_dir: Path, *, studies: int, sampled: int, target: int, seed: int,
                     out: Path) -> Path:
    """The whole funnel under `chaos`; returns the folder the public release was downloaded to."""
    state = chaos.state()
    api = Gateway(state["gateway_url"], state["admin_token"])
    supervisor = asyncio.create_task(chaos.supervise())
    truth = load_truth(data_dir / "truth.jsonl")
    release_id = f"fault-{seed}"
    try:
        readers = await register_panel(api, READERS, seed)
        async with chaos.stage("ingest"):
            await ingest_until_done(chaos.state(), data_dir, studies)
        async with chaos.stage("label"):
            await wait_funnel(api, "suggested", studies)
        async with chaos.stage("sample"):
            await request_sampling_once(api, {"n": sampled, "readers_per_study": READERS_PER_STUDY, "seed": seed})
            await wait_funnel(api, "assignments", READERS_PER_STUDY * sampled)
        async with chaos.stage("read"):
            await asyncio.gather(*(read_worklist(api, r, truth, seed) for r in readers))
            await wait_funnel(api, "decided", sampled)
        async with chaos.stage("release"):
            await request_release_once(api, {"target_size": target, "seed": seed}, release_id)
            deadline = time.monotonic() + 300
            while (await retrying("release", lambda: api.release(release_id)))["status"] != "released":
                assert time.monotonic() < deadline, "the release never completed"
                await asyncio.sleep(0.5)
        release = await retrying("release", lambda: api.release(release_id))
        return await asyncio.to_thread(download_release, chaos.state(), release, out)
    finally:
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
        await api.aclose()


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder`, by relative path."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def delivery_log_env() -> dict[str, str]:
    """Every service logs its deliveries (see `Trail`)."""
    return {f"RADCURATE_{svc.upper()}_DELIVERY_LOG": "1" for svc in SERVICES}


_PUBLISHED = re.compile(r"radcurate\.delivery: (\S+) published (\S+)\[(\d+)\]@(\d+) (\S+)$")
_CONSUMED = re.compile(r"radcurate\.delivery: (\S+) (\S+)\[(\d+)\]@(\d+) (\S+) (\S+)$")
_COMMITTED = re.compile(r"radcurate\.delivery: (\S+) (\S+)\[(\d+)\] committed offset (\d+)$")


@dataclass
class Trail:
    """The delivery log of every service of a stack, in the order each service wrote it."""

    published: list[tuple[str, str, int, int, str]] = field(default_factory=list)  # svc, topic, partition, offset, id
    consumed: list[tuple[str, str, int, int, str, str]] = field(default_factory=list)  # ..., event id, outcome
    committed: dict[tuple[str, str, int], int] = field(default_factory=dict)  # highest offset committed

    @classmethod
    def read(cls, logs: Path) -> Trail:
        trail = cls()
        for path in sorted(logs.glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if m := _PUBLISHED.search(line):
                    trail.published.append((m[1], m[2], int(m[3]), int(m[4]), m[5]))
                elif m := _COMMITTED.search(line):
                    key = (m[1], m[2], int(m[3]))
                    trail.committed[key] = max(trail.committed.get(key, 0), int(m[4]))
                elif m := _CONSUMED.search(line):
                    trail.consumed.append((m[1], m[2], int(m[3]), int(m[4]), m[5], m[6]))
        return trail

    def lost_effects(self, inboxes: dict[str, set[str]]) -> list[str]:
        """Events a service applied and committed its offset past that its inbox no longer holds."""
        lost = []
        for svc, topic, partition, offset, event_id, outcome in self.consumed:
            if (outcome == "applied" and offset < self.committed.get((svc, topic, partition), 0)
                    and event_id not in inboxes.get(svc, set())):
                lost.append(f"{svc} applied {event_id} ({topic}[{partition}]@{offset}), committed offset "
                            f"{self.committed[(svc, topic, partition)]}, but its inbox row is gone")
        return lost

    def never_consumed(self, consumers: dict[str, set[str]]) -> list[str]:
        """Published events that a service subscribed to the topic never took (by event id)."""
        taken = {(svc, event_id) for svc, _, _, _, event_id, _ in self.consumed}
        return [f"{svc} never took {event_id} ({topic}[{partition}]@{offset})"
                for _, topic, partition, offset, event_id in self.published
                for svc, topics in consumers.items() if topic in topics and (svc, event_id) not in taken]


def llm_env(base_url: str) -> dict[str, str]:
    """Both LLM-backed services pointed at the test's OpenAI-compatible server."""
    env: dict[str, str] = {}
    for svc in ("EXTRACTOR", "MAPPER"):
        env |= {f"RADCURATE_{svc}_BACKEND": "llm", f"RADCURATE_{svc}_LLM_BASE_URL": base_url,
                f"RADCURATE_{svc}_LLM_API_KEY": "test-key", f"RADCURATE_{svc}_LLM_TIMEOUT_SECONDS": "10"}
    return env


def dump(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
