"""`radcurate users|sample|release|adjudicate` refuse bad input before sending anything (exit 2)
and say how to reach a gateway when there is none (exit 1). Their effects: tests/e2e/test_cli_api_commands.py."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from radcurate.cli import app

runner = CliRunner()
NOWHERE = ["--gateway", "http://127.0.0.1:9", "--token", "rc_x"]


@pytest.mark.parametrize("args, message", [
    (["users", "add", "x", "--role", "boss"], "unknown role 'boss'"),
    (["users", "list", "--role", "boss"], "unknown role 'boss'"),
    (["sample", "--protocol", "knee"], "unknown protocol 'knee'"),
    (["release", "--protocol", "knee"], "unknown protocol 'knee'"),
    (["adjudicate", "s1"], "say --accept or --reject"),
    (["evaluate", "r1", "/nonexistent/p.csv"], "Invalid value for 'predictions'"),
])
def test_bad_input_exits_2_before_any_request(args, message):
    result = runner.invoke(app, [*args, *NOWHERE])
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_a_plan_file_that_is_not_an_object_exits_2(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text("{not json")
    result = runner.invoke(app, ["sample", "--plan", str(plan), *NOWHERE])
    assert result.exit_code == 2 and "cannot read the plan" in result.stderr


def test_without_a_stack_or_gateway_the_message_says_how_to_connect(tmp_path):
    result = runner.invoke(app, ["users", "list", "--state-dir", str(tmp_path)], env={"RADCURATE_TOKEN": ""})
    assert result.exit_code == 1
    assert "radcurate up" in result.stderr and "--gateway URL --token TOKEN" in result.stderr


def test_an_unreachable_gateway_is_a_clear_error():
    result = runner.invoke(app, ["users", "revoke", "bob", *NOWHERE])
    assert result.exit_code == 1
    assert "cannot reach the gateway at http://127.0.0.1:9" in result.stderr
