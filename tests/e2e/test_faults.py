"""Issue 11 item 7, the proof that RadCurate never stalls and never loses: a CXR funnel runs twice
from the same seed on fresh stacks — once untouched, once while every service, the broker,
Postgres and the S3 server are SIGKILLed (one at a time, at random points, each restarted on its
port and data) and the LLM endpoint goes away mid-labelling. Both runs must end in the same
decisions and a byte-identical release, with every event's effect exactly once and no dead letter.

Bounded for `make test` (one round, a short LLM outage); `make chaos` raises the knobs:
RADCURATE_FAULT_STUDIES, RADCURATE_FAULT_ROUNDS, RADCURATE_FAULT_LLM_OUTAGE_S, RADCURATE_FAULT_SEED.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import psycopg
import pytest

from radcurate.demo import scaled_plan
from radcurate.stack import local
from radcurate.synth import synth_cxr
from services.common import catalogue
from tests.conftest import schema_dsn
from tests.support.chaos import Chaos, FaultPlan, Trail, delivery_log_env, dump, llm_env, run_funnel, tree
from tests.support.fake_openai import FakeOpenAI, pipeline_responder

STUDIES = int(os.environ.get("RADCURATE_FAULT_STUDIES", "100"))
ROUNDS = int(os.environ.get("RADCURATE_FAULT_ROUNDS", "1"))
LLM_OUTAGE_S = float(os.environ.get("RADCURATE_FAULT_LLM_OUTAGE_S", "10"))
SEED = int(os.environ.get("RADCURATE_FAULT_SEED", "7"))
# Each fault costs a restart and a consumer-group rejoin (~10 s); an LLM outage its length plus
# the consumers' backoff; two stacks start.
BUDGET_S = 240 + 40 * 8 * ROUNDS + 3 * LLM_OUTAGE_S + STUDIES

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.timeout(BUDGET_S)]


async def run(state_dir: Path, data_dir: Path, plan: FaultPlan | None, out: Path) -> tuple[Path, dict, Chaos]:
    sampled, target = scaled_plan(STUDIES)
    with FakeOpenAI(pipeline_responder) as llm:
        env = llm_env(llm.base_url) | delivery_log_env()
        await asyncio.to_thread(local.up, state_dir, local.SERVICES, env)
        try:
            chaos = Chaos(state_dir, env, llm, plan)
            try:
                release = await run_funnel(chaos, data_dir, studies=STUDIES, sampled=sampled, target=target,
                                           seed=SEED, out=out)
            except BaseException:  # a stall or a timeout: say what the delivery trail knows first
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(explain, state_dir, chaos.state())
                raise
            return release, await asyncio.to_thread(facts, chaos.state()), chaos
        finally:
            await asyncio.to_thread(local.down, state_dir)


def explain(state_dir: Path, state: dict) -> None:
    """Print the events the delivery trail shows lost or never taken (for a run that failed)."""
    inbox = {}
    for svc in local.SERVICES:
        with psycopg.connect(schema_dsn(state["postgres"]["admin_dsn"], svc), connect_timeout=5) as conn:
            inbox[svc] = {r[0] for r in conn.execute("SELECT event_id FROM inbox")}
    trail = Trail.read(state_dir / "logs")
    lost = trail.lost_effects(inbox)
    unseen = trail.never_consumed({svc: catalogue.consumed_by(svc) for svc in local.SERVICES})
    print(f"\ndelivery trail of the failed run ({state_dir / 'logs'}): {len(lost)} lost, {len(unseen)} never taken")
    print("\n".join(lost[:20] + unseen[:20]))


def facts(state: dict) -> dict[str, Any]:
    """What each service recorded, from its own tables."""
    found: dict[str, Any] = {"rows": {}, "outbox": {}, "dead": {}, "inbox": {}}
    for svc in local.SERVICES:
        with psycopg.connect(schema_dsn(state["postgres"]["admin_dsn"], svc)) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
                " AND table_type = 'BASE TABLE' ORDER BY 1", (svc,))]
            for table in tables:
                found["rows"][f"{svc}.{table}"] = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            found["inbox"][svc] = {r[0] for r in conn.execute("SELECT event_id FROM inbox")}
            found["outbox"][svc] = dict(conn.execute(
                "SELECT topic, count(*) FROM outbox GROUP BY topic ORDER BY topic").fetchall())
            found["dead"][svc] = conn.execute(
                "SELECT (SELECT count(*) FROM inbox WHERE outcome = 'dead_lettered'),"
                " (SELECT count(*) FROM outbox WHERE topic LIKE '%%.dlq'),"
                " (SELECT count(*) FROM outbox WHERE parked_at IS NOT NULL)").fetchone()
            if svc == "consensus":
                found["decisions"] = conn.execute(
                    "SELECT study_id, accepted, labels, rule, rule_version, needs_adjudication, reason,"
                    " jsonb_array_length(vote_ids) FROM decisions ORDER BY study_id").fetchall()
                found["votes"] = conn.execute(
                    "SELECT study_id, reader_id, judgement, counted FROM votes ORDER BY study_id, reader_id").fetchall()
                found["votes_distinct"] = conn.execute("SELECT count(DISTINCT vote_id) FROM votes").fetchone()[0]
            if svc == "mapper":
                found["suggestions"] = conn.execute(
                    "SELECT count(*), count(DISTINCT study_id) FROM suggestions").fetchone()
    return found


async def test_killing_any_part_mid_funnel_changes_no_decision_and_no_byte_of_the_release(tmp_path: Path):
    data = tmp_path / "synth"
    await asyncio.to_thread(synth_cxr, STUDIES, SEED, data)
    ref_release, ref, ref_chaos = await run(tmp_path / "ref", data, None, tmp_path / "ref-out")
    ref_timings = ref_chaos.timings
    plan = FaultPlan.draw(SEED, ROUNDS, LLM_OUTAGE_S)
    release, got, chaos = await run(tmp_path / "faulted", data, plan, tmp_path / "faulted-out")

    # Every planned fault happened (and was recovered from), one at a time.
    assert [(t, s) for t, s, _ in chaos.done] == [(f.target, f.stage) for s in
                                                 ("ingest", "label", "sample", "read", "release")
                                                 for f in plan.at(s)]
    if LLM_OUTAGE_S > 0:  # the outage really stopped the funnel: studies were waiting for the LLM
        assert chaos.labelled_when_llm_returned is not None and chaos.labelled_when_llm_returned < STUDIES
    print(f"\nseed {SEED}, {STUDIES} studies, {ROUNDS} round(s), LLM outage {LLM_OUTAGE_S:.0f}s;"
          f" labelled when the LLM came back: {chaos.labelled_when_llm_returned}")
    print("faults (target, stage, seconds to recover):", [(t, s, round(d, 1)) for t, s, d in chaos.done])
    print("services that exited on their own and were restarted:", chaos.self_exits)
    print("seconds per stage, untouched:", ref_timings, "faulted:", chaos.timings, "load:", os.getloadavg())
    # First the delivery trail (the services' delivery log, kept in faulted/logs): an event a
    # service applied and committed its offset past must still be in its inbox, and every event
    # published to a topic must have been taken by each service consuming it.
    trail = Trail.read(tmp_path / "faulted" / "logs")
    print(f"delivery trail: {len(trail.published)} published, {len(trail.consumed)} consumed,"
          f" logs in {tmp_path / 'faulted' / 'logs'}")
    assert trail.published and trail.consumed and trail.committed, "the services wrote no delivery log"
    assert trail.lost_effects(got["inbox"]) == []
    assert trail.never_consumed({svc: catalogue.consumed_by(svc) for svc in local.SERVICES}) == []
    # None lost, none doubled: every table of every service holds as many rows as in the untouched
    # run, and every service recorded as many events per topic.
    assert got["rows"] == ref["rows"]
    assert got["outbox"] == ref["outbox"]
    assert got["suggestions"] == (STUDIES, STUDIES)
    assert got["votes_distinct"] == len(got["votes"])
    assert all(counted for *_, counted in got["votes"])
    # The same decisions, from the same votes.
    assert dump(got["votes"]) == dump(ref["votes"])
    assert dump(got["decisions"]) == dump(ref["decisions"])
    # No dead letter, no parked event.
    assert got["dead"] == {svc: (0, 0, 0) for svc in local.SERVICES}
    assert ref["dead"] == got["dead"]
    # The release, byte for byte (its manifest carries the holdout manifest's checksum too).
    assert tree(release) == tree(ref_release)
    assert len(tree(release)) > 3
