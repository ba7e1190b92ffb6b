"""A reading session for a newcomer: a panel with one human seat, the other seats simulated.

`radcurate demo --keep-running` ends with one: a reviewer account for the human, a small
sampling run whose panel is that reviewer plus two simulated readers, and the simulated seats
already read — so the human's worklist is waiting, and after each of their votes the study's
discussion shows the other two reads and consensus decides it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

from radcurate.client import Gateway, GatewayError
from radcurate.simulate import SimReader, Truth, ability_for, run_panel
from services.common.contracts import Protocol

PANEL_FILE = "panel.json"


def save_panel(state_dir: str | Path, readers: list[SimReader]) -> None:
    """Keep the simulated readers' tokens beside the stack's state, for `simulate-readers` later."""
    Path(state_dir, PANEL_FILE).write_text(json.dumps(
        [{"user_id": r.user_id, "token": r.token, "miss_rate": r.miss_rate, "speed": r.speed,
          "panel_seed": r.panel_seed} for r in readers]))


def load_panel(state_dir: str | Path) -> list[SimReader] | None:
    path = Path(state_dir, PANEL_FILE)
    if not path.exists():
        return None
    return [SimReader(r["user_id"], r["token"], r["miss_rate"], random.Random(r["user_id"]),
                      ability=ability_for(r["miss_rate"]), speed=r.get("speed", 1.0),
                      panel_seed=r.get("panel_seed", 0)) for r in json.loads(path.read_text())]


@dataclass(frozen=True)
class ReadingSession:
    url: str
    user_id: str
    token: str
    studies: int
    simulated: tuple[str, ...]
    simulated_votes: int

    def instructions(self, state_dir: str | Path, truth: str | Path = "<truth.jsonl>") -> list[str]:
        others = " and ".join(self.simulated)
        return [
            "",
            f"reading station: {self.url}/   (sign in with the token below; API docs at {self.url}/docs)",
            f"reviewer {self.user_id!r}, token (shown once): {self.token}",
            f"{self.studies} studies wait on your worklist; {others} (simulated) have read them already —",
            "after your vote, each study's discussion shows their reads and consensus decides it.",
            f"more simulated reads: radcurate simulate-readers --truth {truth} --state-dir {state_dir}",
            f"stop the stack: radcurate down --state-dir {state_dir}",
        ]


async def open_reading_session(api: Gateway, simulated: list[SimReader], truth: dict[str, Truth], *,
                               protocol: Protocol = Protocol.CXR, studies: int = 10, seed: int = 0,
                               human_id: str = "you", timeout: float = 120) -> ReadingSession | None:
    """Create the human reviewer, sample up to `studies` not yet sampled studies for the panel
    (human + `simulated`), and let the simulated seats read. None when no study is left to sample."""
    funnel = (await api.progress(protocol.value))["funnel"]
    n = min(studies, funnel["ingested"] - funnel["sampled"])
    if n < 1:
        return None
    user_id, token = await _new_reviewer(api, human_id)
    panel = [user_id, *(r.user_id for r in simulated)]
    run = await api.request_sampling({"n": n, "readers_per_study": len(panel), "seed": seed, "min_per_label": 0},
                                     panel=panel, protocol=protocol.value)
    deadline = time.monotonic() + timeout
    while True:
        outcome = await api.sampling_run(run["run_id"])
        if outcome["status"] != "requested" and len(outcome["studies"]) == (outcome.get("n_selected") or 0):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"sampling run {run['run_id']} did not complete in {timeout:.0f}s")
        await asyncio.sleep(0.5)
    votes = await run_panel(api, simulated, truth)  # each reads their own worklist: the human's is untouched
    return ReadingSession(api.base_url, user_id, token, len(outcome["studies"]), tuple(r.user_id for r in simulated),
                          votes)


async def _new_reviewer(api: Gateway, wanted: str) -> tuple[str, str]:
    for i in range(1, 100):
        user_id = wanted if i == 1 else f"{wanted}-{i}"
        try:
            return user_id, await api.create_user(user_id, "reviewer", "You (human reader)")
        except GatewayError as exc:
            if exc.status != 409:
                raise
    raise RuntimeError(f"no free user id like {wanted!r}")
