"""Simulated radiologists: a panel of readers who vote through the gateway's HTTP API.

Each reader looks at a study's hidden truth through their own imperfect eyes — they miss true
findings (subtle ones more often) and now and then see one that is not there — then compares
what they saw with the AI-suggested labels: identical ⇒ agree_all, one label off ⇒ agree_mostly
with the correction, more ⇒ disagree. Nothing here knows the funnel's published figures: the
share of accepted studies emerges from the reports, the extractor, the sampler and these readers.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from radcurate import progress
from radcurate.client import Gateway, GatewayError
from radcurate.simulate_lumbar import LumbarTruth, grade_study, lumbar_truth

# Reader skill: the chance to miss a clearly visible true finding is drawn per reader from this
# range; subtle findings are missed SUBTLE_FACTOR times as often; a false positive (seeing an
# absent finding) happens with FALSE_POSITIVE_RATE per study.
MISS_RANGE = (0.02, 0.12)
SUBTLE_FACTOR = 3.0
FALSE_POSITIVE_RATE = 0.04
SECONDS_PER_READ = (25.0, 0.5)  # lognormal: median seconds, sigma


@dataclass(frozen=True)
class Truth:
    labels: frozenset[str]
    subtle: frozenset[str]


@dataclass
class SimReader:
    user_id: str
    token: str
    miss_rate: float
    rng: random.Random

    def perceive(self, truth: Truth, label_ids: list[str]) -> set[str]:
        seen = set()
        for label in truth.labels:
            p_miss = self.miss_rate * (SUBTLE_FACTOR if label in truth.subtle else 1.0)
            if self.rng.random() >= min(p_miss, 0.9):
                seen.add(label)
        if self.rng.random() < FALSE_POSITIVE_RATE:
            seen.add(self.rng.choice(label_ids))
        return seen

    def judge(self, suggested: set[str], truth: Truth, label_ids: list[str]) -> dict:
        seen = self.perceive(truth, label_ids)
        added, removed = sorted(seen - suggested), sorted(suggested - seen)
        wrong = len(added) + len(removed)
        verdict = "agree_all" if wrong == 0 else "agree_mostly" if wrong == 1 else "disagree"
        seconds = self.rng.lognormvariate(0, SECONDS_PER_READ[1]) * SECONDS_PER_READ[0]
        return {"verdict": verdict, "added_labels": added, "removed_labels": removed,
                "seconds_spent": round(seconds, 1), "comment": ""}


def load_truth(path: Path) -> dict[str, Truth | LumbarTruth]:
    """The hidden truth per study: labels (CXR) or grades and points (lumbar, rows with `grades`)."""
    truth: dict[str, Truth | LumbarTruth] = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                truth[row["study_id"]] = lumbar_truth(row) if "grades" in row else \
                    Truth(frozenset(row["labels"]), frozenset(row.get("subtle", [])))
    return truth


async def register_panel(admin: Gateway, n_readers: int, seed: int, prefix: str = "reader") -> list[SimReader]:
    """Create the panel's reviewer accounts; each simulated reader gets its own skill."""
    rng = random.Random(seed)
    readers = []
    for i in range(1, n_readers + 1):
        user_id = f"{prefix}-{i:02d}"
        token = await admin.create_user(user_id, "reviewer", f"Simulated radiologist {i}")
        readers.append(SimReader(user_id, token, rng.uniform(*MISS_RANGE), random.Random(rng.random())))
    return readers


async def read_worklist(api: Gateway, reader: SimReader, truth: dict[str, Truth],
                        on_vote: Callable[[], None] | None = None) -> int:
    """Vote on every open assignment of one reader; returns the number of votes cast."""
    me = api.as_user(reader.token)
    votes = 0
    while (a := await me.next_assignment()) is not None:
        if a.get("protocol") == LUMBAR:
            body = await grade(me, reader, a, truth[a["study_id"]])
        else:
            suggested = {s["label_id"] for s in a["suggested"]}
            body = reader.judge(suggested, truth[a["study_id"]], a["label_ids"])
        await cast_vote(me, a["assignment_id"], body)
        votes += 1
        if on_vote:
            on_vote()
    return votes


LUMBAR = "lumbar-grading"


async def grade(me: Gateway, reader: SimReader, a: dict, truth: LumbarTruth) -> dict:
    """A lumbar read: every cell graded (a grade slips one step at the reader's `miss_rate`), a
    point near each true one, on the series the gateway lists for the study."""
    series = (await me.request("GET", a["series_url"])).json()
    seconds = reader.rng.lognormvariate(0, SECONDS_PER_READ[1]) * 4 * SECONDS_PER_READ[0]
    return {"grades": grade_study(truth, series, reader.miss_rate, reader.rng), "seconds_spent": round(seconds, 1),
            "comment": ""}


CONFIRMATION_TYPE = "https://radcurate.dev/problems/confirmation-required"


async def cast_vote(me: Gateway, assignment_id: str, body: dict) -> dict:
    """Vote; when the gateway asks to confirm an omission, the simulated reader stands by what it
    saw (it judged from the truth, as a radiologist judges from the image) and confirms."""
    key = str(uuid.uuid4())
    try:
        return await me.vote(assignment_id, body, idempotency_key=key)
    except GatewayError as exc:
        if exc.status != 409 or exc.problem.get("type") != CONFIRMATION_TYPE:
            raise
    return await me.vote(assignment_id, {**body, "confirm": True}, idempotency_key=key)


async def run_panel(api: Gateway, readers: list[SimReader], truth: dict[str, Truth]) -> int:
    """All readers read at once, each through their own worklist (`api` a curator's, for the
    progress total: the panel's open reads)."""
    with progress.current().task("simulated reads", total=await _open_reads(api, readers), unit="votes") as task:
        counts = await asyncio.gather(*(read_worklist(api, r, truth, task.advance) for r in readers))
    return sum(counts)


async def _open_reads(api: Gateway, readers: list[SimReader]) -> int | None:
    ids = {r.user_id for r in readers}
    try:
        return sum(r["open"] for r in (await api.progress())["readers"] if r["reader_id"] in ids)
    except GatewayError:
        return None  # not a curator's client: progress without a total
