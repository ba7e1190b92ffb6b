"""`procs.retrying_port_races`, the one mechanism by which SeaweedFS, tansu and Postgres start
again on fresh ports when a port was taken between its choice and the server's own bind, and
`procs.listening`, which tells the server from whatever took its port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from radcurate.stack import procs
from radcurate.stack.procs import PORT_RACE_TRIES, StackError, listening, retrying_port_races

MESSAGES = {  # what each server logs when its bind fails
    "seaweedfs": b"F1130 master.go:264 listen tcp 127.0.0.1:40391: bind: address already in use\n",
    "postgres": b'LOG:  could not bind IPv4 address "127.0.0.1": Address already in use\n',
    "tansu": b'ERROR err=Io(Os { code: 98, kind: AddrInUse, message: "Address in use" })\n',
}


def failing(log: Path, outcomes: list[bytes | None]):
    """An attempt that, call by call, logs the next outcome and fails (bytes), or succeeds (None);
    it records the `fresh` flag of each call."""
    calls: list[bool] = []

    def attempt(fresh: bool) -> str:
        calls.append(fresh)
        outcome = outcomes[len(calls) - 1]
        if outcome is None:
            return f"started on attempt {len(calls)}"
        with log.open("ab") as f:
            f.write(outcome)
        raise StackError("exited during start-up")

    return attempt, calls


@pytest.mark.parametrize("server", sorted(MESSAGES))
def test_a_taken_port_is_tried_again_on_fresh_ports(tmp_path: Path, server: str) -> None:
    log = tmp_path / "server.log"
    attempt, calls = failing(log, [MESSAGES[server], MESSAGES[server], None])
    assert retrying_port_races(attempt, log) == "started on attempt 3"
    assert calls == [False, True, True]  # previous ports first, fresh ones after a race


def test_any_other_failure_is_raised_at_once(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    attempt, calls = failing(log, [b"FATAL: data directory has wrong ownership\n", None])
    with pytest.raises(StackError):
        retrying_port_races(attempt, log)
    assert calls == [False]


def test_a_port_taken_on_every_try_gives_up_after_the_last(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    attempt, calls = failing(log, [MESSAGES["postgres"]] * (PORT_RACE_TRIES + 1))
    with pytest.raises(StackError):
        retrying_port_races(attempt, log)
    assert len(calls) == PORT_RACE_TRIES


def test_only_what_the_attempt_logged_counts(tmp_path: Path) -> None:
    """A taken port in an earlier run's lines of the same log is no reason to try again."""
    log = tmp_path / "server.log"
    log.write_bytes(MESSAGES["tansu"])
    attempt, calls = failing(log, [b"panicked: no such storage engine\n", None])
    with pytest.raises(StackError):
        retrying_port_races(attempt, log)
    assert calls == [False]


def test_listening_tells_the_server_from_whoever_holds_its_port() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            assert listening(os.getpid(), port)
            assert procs.port_open(port)  # what the start used to wait for: anyone's socket
            assert not listening(other.pid, port)
        finally:
            other.kill()
            other.wait()
    assert not listening(os.getpid(), port)
