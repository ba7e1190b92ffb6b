"""Issue 11 item 3: `radcurate dlq list|show|replay` against the running stack. An event the
gateway cannot apply (a simulated bug: a trigger that refuses it) is dead-lettered; once the
cause is fixed, a replay republishes it with the same event_id and it takes effect once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from radcurate.cli import app
from radcurate.stack import local
from services.common.contracts import ReportReady, Topic
from tests.conftest import schema_dsn
from tests.integration.test_outbox_and_consumer import produce

pytestmark = pytest.mark.e2e
runner = CliRunner()


@pytest.fixture(scope="module")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state_dir = tmp_path_factory.mktemp("dlq-stack")
    local.up(state_dir)
    yield state_dir
    local.down(state_dir)


def gateway_sql(state: dict, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(schema_dsn(state["postgres"]["admin_dsn"], "gateway"), autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def wait_for(check: Callable[[], object], what: str, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def dlq(stack_dir: Path, *args: str):
    return runner.invoke(app, ["dlq", *args, "--state-dir", str(stack_dir)])


def test_a_dead_letter_is_listed_shown_and_replayed_once_its_cause_is_fixed(stack_dir: Path):
    state = local.load(stack_dir.resolve())
    event = ReportReady(study_id="rep-dlq", report_id="rep-dlq", protocol="cxr-label-verification",
                        report={"kappa": 0.5})
    gateway_sql(state, """
        CREATE FUNCTION refuse_report() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
          IF NEW.event_id = %s AND NEW.outcome = 'applied' THEN RAISE EXCEPTION 'simulated bug in report-ready'; END IF;
          RETURN NEW; END $$;
        CREATE TRIGGER refuse_report BEFORE INSERT ON inbox FOR EACH ROW EXECUTE FUNCTION refuse_report();
    """.replace("%s", f"'{event.event_id}'"))
    asyncio.run(produce(state["kafka"]["bootstrap"], Topic.REPORT_READY.value,
                        [(event.study_id, event.model_dump_json().encode())]))
    outcome = "SELECT outcome FROM inbox WHERE event_id = %s"
    wait_for(lambda: gateway_sql(state, outcome, (event.event_id,)) == [("dead_lettered",)], "the dead letter")

    listed = wait_for(lambda: (r := dlq(stack_dir, "list", "--topic", "report-ready")).exit_code == 0
                      and event.event_id in r.output and r, "the letter on report-ready.dlq")
    assert "simulated bug in report-ready" in listed.output
    shown = dlq(stack_dir, "show", "--id", event.event_id)
    assert shown.exit_code == 0, shown.output
    letter = json.loads(shown.output)
    assert letter["service"] == "gateway" and json.loads(letter["payload"])["event_id"] == event.event_id
    assert letter["replays"] == []

    assert dlq(stack_dir, "show", "--id", "no-such-letter").exit_code == 1
    assert dlq(stack_dir, "list", "--since", "yesterday").exit_code == 2
    assert dlq(stack_dir, "replay").exit_code == 2

    gateway_sql(state, "DROP TRIGGER refuse_report ON inbox")  # the fix is deployed
    replayed = dlq(stack_dir, "replay", "--id", event.event_id, "--reason", "trigger removed")
    assert replayed.exit_code == 0, replayed.output
    assert f"replayed {event.event_id} to report-ready" in replayed.output
    wait_for(lambda: gateway_sql(state, outcome, (event.event_id,)) == [("applied",)], "the replayed event applied")
    [(who, why)] = gateway_sql(state, "SELECT requested_by, reason FROM dead_letter_replays"
                                      " WHERE original_event_id = %s",
                               (event.event_id,))
    assert (who, why) == ("admin", "trigger removed")
    again = json.loads(dlq(stack_dir, "show", "--id", letter["event_id"]).output)
    assert [r["requested_by"] for r in again["replays"]] == ["admin"]


def test_a_tombstone_is_dead_lettered_and_cannot_be_replayed(stack_dir: Path):
    state = local.load(stack_dir.resolve())
    asyncio.run(produce(state["kafka"]["bootstrap"], Topic.REPORT_READY.value, [("tomb", None)]))

    def tombstone_letter():
        result = dlq(stack_dir, "list", "--topic", "report-ready", "--json")
        letters = json.loads(result.output) if result.exit_code == 0 else []
        return next((i for i in letters if i["payload_encoding"] == "tombstone"), None)

    item = wait_for(tombstone_letter, "the tombstone's dead letter")
    refused = dlq(stack_dir, "replay", "--id", item["event_id"])
    assert refused.exit_code == 1
    assert "tombstone" in refused.output
