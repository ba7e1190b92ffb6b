"""The local stack's state dir and ports, without starting anything: `down` keeps the data,
`down --wipe` deletes only a stack's own directory, ports are reused while free."""

from __future__ import annotations

import http.server
import json
import os
import socket
import stat
import subprocess
import threading
import time

import pytest
from typer.testing import CliRunner

from radcurate.cli import app
from radcurate.stack import local, procs, seaweed
from radcurate.stack.procs import reuse_port

runner = CliRunner()


def stopped_stack(state_dir) -> dict:
    """A stack.json as `down` leaves it, with its data folders."""
    state = {"state_dir": str(state_dir), "admin_token": "rc_admin_x", "passwords": {"gateway": "pw"},
             "s3": {"pid": None, "endpoint": "127.0.0.1:1", "secret_key": "s"},
             "postgres": {"pid": None, "port": 2}, "kafka": {"pid": None, "port": 3}, "services": {}}
    local.save(state_dir, state)
    for part in ("pg/data", "s3/data", "logs"):
        (state_dir / part).mkdir(parents=True)
    (state_dir / "s3/data/tansu_1.dat").write_bytes(b"log")
    return state


def test_down_keeps_the_data_and_the_credentials(tmp_path):
    state_dir = tmp_path / "stack"
    before = stopped_stack(state_dir)
    result = runner.invoke(app, ["down", "--state-dir", str(state_dir)])
    assert result.exit_code == 0 and "nothing was running" in result.output
    assert (state_dir / "s3/data/tansu_1.dat").read_bytes() == b"log"
    after = local.load(state_dir)
    assert stat.S_IMODE(local.stack_file(state_dir).stat().st_mode) == 0o600  # tokens and secrets
    assert (after["admin_token"], after["passwords"], after["s3"]["secret_key"]) == (
        before["admin_token"], before["passwords"], before["s3"]["secret_key"])


def test_down_wipe_deletes_the_state_dir(tmp_path):
    state_dir = tmp_path / "stack"
    stopped_stack(state_dir)
    (state_dir / "panel.json").write_text("{}")  # what the demo leaves there
    result = runner.invoke(app, ["down", "--wipe", "--state-dir", str(state_dir)])
    assert result.exit_code == 0 and "wiped" in result.output
    assert not state_dir.exists()


def test_down_wipe_refuses_a_directory_that_is_not_a_stack(tmp_path):
    (tmp_path / "thesis.tex").write_text("months of work")
    (tmp_path / "pg").mkdir()
    result = runner.invoke(app, ["down", "--wipe", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1 and "not wiping" in result.output
    assert (tmp_path / "thesis.tex").read_text() == "months of work" and (tmp_path / "pg").is_dir()


def test_a_free_previous_port_is_reused_and_a_taken_one_replaced():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert reuse_port(port) == port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        all_taken = dict.fromkeys(seaweed.PORT_NAMES, taken)
        assert seaweed.choose_ports(all_taken, wait=0) != all_taken
        fresh = seaweed.choose_ports(None)
    assert len(set(fresh.values())) == len(seaweed.PORT_NAMES)


def test_a_service_socket_keeps_its_previous_port_while_free_and_is_listening_for_the_child():
    with procs.listening_socket(None) as first:
        port = first.getsockname()[1]
        assert first.get_inheritable()
        assert not procs.port_free(port)  # held from the moment it is chosen
        with procs.listening_socket(port) as second:  # taken (by `first`): another port
            assert second.getsockname()[1] != port
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # listening: a client gets in
    with procs.listening_socket(port) as again:
        assert again.getsockname()[1] == port


class _Healthz(http.server.BaseHTTPRequestHandler):
    answers_as = "mapper"

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = json.dumps({"status": "ok", "service": self.answers_as}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_a_service_is_healthy_only_if_its_own_healthz_answers():
    """Every service (and SeaweedFS) answers /healthz with 200: another one on the port, say one
    that took it while this one could not bind, must not pass for it."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Healthz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        info = {"url": f"http://127.0.0.1:{server.server_address[1]}"}
        assert local.healthy("mapper", info)
        assert not local.healthy("extractor", info)
    finally:
        server.shutdown()
        server.server_close()
    assert not local.healthy("mapper", info)  # nothing answers any more


def test_the_s3_credentials_and_signing_keys_are_readable_by_their_owner_only(tmp_path):
    seaweed.write_config(tmp_path, "radcurate", "the-secret",
                         {k: f"key-{k}" for k in ("read", "write", "filer", "filer_read")})
    identities = json.loads((tmp_path / "s3.json").read_text())["identities"]
    assert [c["secretKey"] for i in identities for c in i["credentials"]] == ["the-secret"]
    assert 'key = "key-read"' in (tmp_path / "security.toml").read_text()
    for name in ("s3.json", "security.toml"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


@pytest.fixture
def unrelated_process():
    """A process that is not the stack's, leading its own process group as a daemon would: the
    kind a recycled pid in an old stack.json may point at."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("stamp", ["stale", "missing"])
def test_down_leaves_alone_a_process_that_only_shares_a_recorded_pid(tmp_path, unrelated_process, stamp):
    """Issue 11 item 16: `down` signalled whatever process group had the recorded pid."""
    state_dir = tmp_path / "stack"
    state = stopped_stack(state_dir)
    entry = {"pid": unrelated_process.pid, "port": 9, "url": "http://127.0.0.1:9", "log": "x"}
    if stamp == "stale":  # our process had this pid once; this one started at another time
        entry["started"] = f"{procs.start_stamp(unrelated_process.pid).rsplit(':', 1)[0]}:1"
    state["services"] = {"gateway": entry}
    state["kafka"] = {**entry, "port": 3}
    local.save(state_dir, state)
    assert local.down(state_dir) == []
    time.sleep(0.2)
    assert unrelated_process.poll() is None  # still running
    assert local.health(state)["kafka"] == "down" and local.health(state)["gateway"] == "down"


def test_down_stops_the_process_it_started(tmp_path, unrelated_process):
    state_dir = tmp_path / "stack"
    state = stopped_stack(state_dir)
    state["services"] = {"gateway": {**procs.process(unrelated_process.pid), "port": 9, "url": "http://127.0.0.1:9"}}
    local.save(state_dir, state)
    assert local.down(state_dir) == ["gateway"]
    unrelated_process.wait(timeout=5)  # ended (alive() reaps it, so the status is not kept)
    assert not procs.alive(unrelated_process.pid)


def test_a_start_stamp_names_one_process():
    assert procs.start_stamp(os.getpid()) == procs.start_stamp(os.getpid())
    # A process started later has another stamp. Not the parent: a parent and the child it
    # forked may start within one clock tick. A child started >= 2 ticks after this process can't.
    tick = 1 / os.sysconf("SC_CLK_TCK")
    time.sleep(2 * tick)
    child = subprocess.Popen(["sleep", "5"])
    try:
        assert procs.start_stamp(child.pid) not in (None, procs.start_stamp(os.getpid()))
    finally:
        child.kill()
        child.wait()
    assert procs.ours(procs.process(os.getpid())) and not procs.ours({"pid": os.getpid()})
